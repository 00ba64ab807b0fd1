/**
 * Room deltas (`room_delta`): the server sends the whole room once
 * (`room_state`), then only what changed. The rules are the Rust ones
 * (`RoomView::apply` in sotto-proto): changes apply in order; `left`
 * removes a member, `put` removes the member's old entry (if any) and
 * inserts it at `at`, `set` changes a member's role and flags (and moves it
 * to `at` if given). A delta that does not start at the view's version, or
 * does not fit it, returns null: the caller asks for the whole room again.
 */
import type { RoomDelta } from "../wire/RoomDelta";
import type { RoomView } from "../wire/RoomView";

export function applyDelta(view: RoomView, delta: RoomDelta): RoomView | null {
  if (delta.room_id !== view.id || delta.from !== view.version || delta.version <= delta.from) {
    return null;
  }
  const members = view.members.slice();
  for (const change of delta.changes) {
    if (change.op === "left") {
      const j = members.findIndex((m) => m.user_id === change.user_id);
      if (j < 0) return null;
      members.splice(j, 1);
    } else if (change.op === "put") {
      const j = members.findIndex((m) => m.user_id === change.member.user_id);
      if (j >= 0) members.splice(j, 1);
      if (change.at > members.length) return null;
      members.splice(change.at, 0, change.member);
    } else {
      const j = members.findIndex((m) => m.user_id === change.user_id);
      if (j < 0) return null;
      const old = members[j];
      const m = {
        ...old,
        role: change.role ?? old.role,
        hand_raised: change.hand_raised ?? old.hand_raised,
        muted: change.muted ?? old.muted,
        invited_to_stage: change.invited_to_stage ?? old.invited_to_stage,
      };
      // A hand going down leaves the queue; one going up takes its place.
      if (change.hand_raised === false) delete m.hand_order;
      if (change.hand_order !== undefined) m.hand_order = change.hand_order;
      if (change.at === undefined) {
        members[j] = m;
      } else {
        members.splice(j, 1);
        if (change.at > members.length) return null;
        members.splice(change.at, 0, m);
      }
    }
  }
  const about = delta.about ?? view;
  return {
    ...view,
    title: about.title,
    description: about.description,
    kind: about.kind,
    ended: about.ended,
    version: delta.version,
    members,
    audience_count: delta.audience_count ?? view.audience_count,
  };
}
