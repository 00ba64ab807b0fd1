// Small accessible building blocks: links, avatars, alerts, dialogs, menus.

import type { ComponentChildren, JSX } from "preact";
import { useEffect, useId, useRef, useState } from "preact/hooks";
import { navigate } from "./router";

export function Link(props: { href: string; class?: string; children: ComponentChildren; current?: boolean }) {
  return (
    <a
      href={props.href}
      class={props.class}
      aria-current={props.current ? "page" : undefined}
      onClick={(e: MouseEvent) => {
        if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        navigate(props.href);
      }}
    >
      {props.children}
    </a>
  );
}

/** Up to two initials of a name. */
export function initials(name: string): string {
  const words = name.trim().split(/\s+/u).filter(Boolean);
  const letters = words.length >= 2 ? [words[0], words[words.length - 1]] : words;
  const out = letters.map((w) => Array.from(w)[0] ?? "").join("");
  return out.toUpperCase() || "?";
}

/** A stable hue from a user id, so people are told apart at a glance. */
function hueClass(seed: string): string {
  let h = 0;
  for (let i = 0; i < seed.length; i++) h = (h * 31 + seed.charCodeAt(i)) >>> 0;
  return `avatar-hue-${h % 8}`;
}

export function Avatar(props: { name: string; seed: string; speaking?: boolean; size?: "big" | "small" }) {
  const cls = ["avatar", hueClass(props.seed), props.size === "small" ? "avatar-small" : "", props.speaking ? "speaking" : ""]
    .filter(Boolean)
    .join(" ");
  return (
    <span class={cls} aria-hidden="true">
      {initials(props.name)}
    </span>
  );
}

/** An error or warning, announced by screen readers. */
export function Alert(props: { children: ComponentChildren; kind?: "error" | "warning" | "info" }) {
  return (
    <div role="alert" class={`alert alert-${props.kind ?? "error"}`}>
      {props.children}
    </div>
  );
}

/** Sets the page title. */
export function useTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} · sotto` : "sotto";
  }, [title]);
}

/**
 * A modal dialog (the native <dialog>): focus moves into it when it opens and
 * back to what had it when it closes; Escape closes it.
 */
export function Dialog(props: {
  open: boolean;
  title: string;
  onClose: () => void;
  children: ComponentChildren;
  class?: string;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const returnTo = useRef<Element | null>(null);
  const titleId = useId();
  const { open, onClose } = props;
  const onCloseRef = useRef(onClose);
  onCloseRef.current = onClose;

  useEffect(() => {
    const dlg = ref.current;
    if (!dlg) return;
    if (open && !dlg.open) {
      returnTo.current = document.activeElement;
      dlg.showModal();
      // The marked control if any, else the title: the dialog is read from the top.
      const first = dlg.querySelector<HTMLElement>("[data-autofocus]") ?? dlg.querySelector<HTMLElement>(".dialog-title");
      first?.focus();
    } else if (!open && dlg.open) {
      dlg.close();
    }
  }, [open]);

  useEffect(() => {
    const dlg = ref.current;
    return () => {
      // Unmounted while open: give focus back.
      if (dlg?.open) restore();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  function restore() {
    const el = returnTo.current as HTMLElement | null;
    returnTo.current = null;
    if (el && el.isConnected && typeof el.focus === "function") el.focus();
  }

  return (
    <dialog
      ref={ref}
      class={`dialog ${props.class ?? ""}`}
      aria-labelledby={titleId}
      onCancel={(e: Event) => {
        e.preventDefault();
        onCloseRef.current();
      }}
      onClose={() => {
        restore();
        if (open) onCloseRef.current();
      }}
    >
      <h2 id={titleId} class="dialog-title" tabIndex={-1}>
        {props.title}
      </h2>
      {props.children}
    </dialog>
  );
}

export interface MenuItem {
  label: string;
  onSelect: () => void;
  danger?: boolean;
}

/**
 * A menu button: the button opens a role="menu" list; arrow keys, Home and
 * End move between items, Escape closes it and returns focus to the button.
 */
export function MenuButton(props: { label: string; items: MenuItem[]; buttonText?: ComponentChildren }) {
  const [open, setOpen] = useState(false);
  const buttonRef = useRef<HTMLButtonElement>(null);
  const menuRef = useRef<HTMLUListElement>(null);
  const menuId = useId();

  function items(): HTMLElement[] {
    return Array.from(menuRef.current?.querySelectorAll<HTMLElement>("[role=menuitem]") ?? []);
  }

  useEffect(() => {
    if (!open) return;
    // Keep the menu inside the window (people at the edges of a narrow screen).
    const menu = menuRef.current;
    if (menu) {
      const r = menu.getBoundingClientRect();
      const margin = 8;
      let dx = 0;
      if (r.right > window.innerWidth - margin) dx = window.innerWidth - margin - r.right;
      if (r.left + dx < margin) dx = margin - r.left;
      if (dx !== 0) menu.style.transform = `translateX(calc(-50% + ${Math.round(dx)}px))`;
    }
    items()[0]?.focus();
    const onDown = (e: PointerEvent) => {
      const t = e.target as Node;
      if (!menuRef.current?.contains(t) && !buttonRef.current?.contains(t)) setOpen(false);
    };
    document.addEventListener("pointerdown", onDown);
    return () => document.removeEventListener("pointerdown", onDown);
  }, [open]);

  function close(focusButton: boolean) {
    setOpen(false);
    if (focusButton) buttonRef.current?.focus();
  }

  function onMenuKey(e: KeyboardEvent) {
    const list = items();
    const i = list.indexOf(document.activeElement as HTMLElement);
    let next = -1;
    switch (e.key) {
      case "ArrowDown":
        next = (i + 1) % list.length;
        break;
      case "ArrowUp":
        next = (i - 1 + list.length) % list.length;
        break;
      case "Home":
        next = 0;
        break;
      case "End":
        next = list.length - 1;
        break;
      case "Escape":
        e.preventDefault();
        e.stopPropagation();
        close(true);
        return;
      case "Tab":
        setOpen(false);
        return;
      default:
        return;
    }
    e.preventDefault();
    list[next]?.focus();
  }

  function onButtonKey(e: KeyboardEvent) {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      setOpen(true);
    }
  }

  return (
    <div class="menu-wrap">
      <button
        ref={buttonRef}
        type="button"
        class="icon-button"
        aria-label={props.label}
        aria-haspopup="menu"
        aria-expanded={open}
        aria-controls={open ? menuId : undefined}
        onClick={() => setOpen(!open)}
        onKeyDown={onButtonKey}
      >
        {props.buttonText ?? <span aria-hidden="true">⋯</span>}
      </button>
      {open && (
        <ul ref={menuRef} id={menuId} role="menu" aria-label={props.label} class="menu" onKeyDown={onMenuKey}>
          {props.items.map((item) => (
            <li role="none" key={item.label}>
              <button
                type="button"
                role="menuitem"
                tabIndex={-1}
                class={item.danger ? "menuitem danger" : "menuitem"}
                onClick={() => {
                  close(true);
                  item.onSelect();
                }}
              >
                {item.label}
              </button>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

/** A labelled form field. */
export function Field(props: {
  label: string;
  hint?: string;
  children: (attrs: { id: string; "aria-describedby"?: string }) => JSX.Element;
}) {
  const id = useId();
  const hintId = useId();
  return (
    <div class="field">
      <label for={id}>{props.label}</label>
      {props.children({ id, "aria-describedby": props.hint ? hintId : undefined })}
      {props.hint && (
        <p id={hintId} class="hint">
          {props.hint}
        </p>
      )}
    </div>
  );
}
