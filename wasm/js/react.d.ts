import type { ReactNode } from "react";
import type { Client, ClientOptions, ConnectionState, EventMessage, Member, ResetMessage, ResubError } from "./index.js";

/** Provides a client to the components below: made from `url` and `options`, or the `client` you pass. */
export function ResubProvider(props: { url?: string; options?: ClientOptions; client?: Client; children?: ReactNode }): ReactNode;

/** The client of the nearest `ResubProvider`, or null until it is made. */
export function useClient(): Client | null;

export interface SubscriptionView {
  /** The latest events, oldest first (up to `limit`). */
  events: EventMessage[];
  status: "connecting" | "live" | "ended" | "error";
  error: ResubError | null;
  /** The last reset, if any: events may have been missed. */
  reset: ResetMessage | null;
}

/** A subscription's latest events and status; shared by every component using the same channel and `from`. */
export function useSubscription(channel: string, options?: { from?: string; limit?: number }): SubscriptionView;

/** The connection state of the provider's client. */
export function useConnectionState(): ConnectionState | { state: "connecting" };

/** Who is present on `channel`, kept up to date. */
export function usePresence(channel: string, options?: { refreshMs?: number }): Member[];
