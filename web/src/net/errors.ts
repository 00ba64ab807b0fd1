// Plain words for the API's error codes, for when the server's message is
// only the code (it writes its own message for people on most errors).

import type { ErrorCode } from "../wire/ErrorCode";

const words: Partial<Record<ErrorCode, string>> = {
  malformed_request: "The request was not understood.",
  unsupported_media_type: "The request was not sent as JSON.",
  payload_too_large: "That is too long to send.",
  not_found: "That was not found.",
  method_not_allowed: "That cannot be done here.",
  rate_limited: "Too many attempts. Wait a minute and try again.",
  invalid_username: "A username is 3 to 20 characters: lowercase letters, digits and _.",
  invalid_profile: "A display name is 1 to 50 characters (a bio at most 300), without control characters.",
  invalid_room: "A room title is 1 to 100 characters (a description at most 500).",
  invalid_public_key: "This browser's device key was refused.",
  invalid_parameter: "A value is out of range.",
  username_taken: "That username is taken. Try another.",
  device_key_taken: "This browser's device key already belongs to an account.",
  invite_not_found: "This invite link is not valid. Check that you have the whole link.",
  invite_expired: "This invite link has expired. Ask for a new one.",
  invite_used_up: "This invite link has been used up. Ask for a new one.",
  bad_signature: "The signature of this device was refused.",
  challenge_invalid: "Signing in took too long. Try again.",
  unauthenticated: "You are not signed in.",
  session_expired: "Your session expired. Reload the page to sign in again.",
  session_revoked: "This session was signed out.",
  admin_only: "Only an administrator can do that.",
  user_not_found: "There is no such user.",
  device_not_found: "There is no such device.",
  last_device: "You cannot remove your last device.",
  invalid_device_link: "The device change was refused.",
  device_chain_conflict: "Your devices changed elsewhere at the same time. Try again.",
  invalid_access_statement: "The signed statement was refused.",
  cannot_follow_self: "You cannot follow yourself.",
  room_not_found: "There is no such room.",
  room_ended: "This room has ended.",
  room_access_denied: "This room is not open to you: a moderator has to let you in (a social room is for people its hosts follow).",
  banned_from_room: "You were banned from this room.",
  not_in_room: "Join the room first.",
  target_not_in_room: "That person is no longer in the room.",
  not_permitted: "Your role in this room does not allow that.",
  target_outranks_you: "You can only do that to someone below your role.",
  not_on_stage: "That person is not on the stage.",
  already_on_stage: "Already on the stage.",
  no_stage_invitation: "There is no invitation to the stage any more.",
  only_self: "Only they can do that for themselves.",
  unsupported_version: "This page is out of date. Reload it.",
  hello_required: "The connection was not signed in.",
  bad_offer: "The audio connection was refused.",
  media_unavailable: "Audio is not available on this server right now.",
  stale_epoch: "The room's encryption moved on. Try again.",
  e2ee_invalid: "An encryption message was refused.",
  e2ee_no_group: "The room's encryption has not started yet.",
  e2ee_hello_required: "The room's encryption was not started.",
  internal: "The server had a problem. Please try again.",
  unavailable: "The server is busy or restarting. Try again in a moment.",
  database_unavailable: "The server cannot reach its database. Try again in a moment.",
};

/** The message to show for an error body: the server's own, unless it is only the code. */
export function errorWords(code: string, message: string): string {
  const text = message.trim();
  // Messages written for programs rather than people.
  if (code === "unauthenticated") return words.unauthenticated ?? "You are not signed in.";
  if (text === "" || text === code || /^[a-z0-9]+(_[a-z0-9]+)+$/u.test(text)) {
    return (words as Record<string, string>)[code] ?? (words as Record<string, string>)[text] ?? "Something went wrong. Please try again.";
  }
  // The server writes sentences in lower case without a full stop.
  const first = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/u.test(first) ? first : `${first}.`;
}
