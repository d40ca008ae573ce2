/**
 * Spreading a costly kind of work over event-loop turns. A burst that arrives in one poll (a refilled
 * accept bucket, a reconnect storm, a flood) handled at once would hold every established client's
 * packets for as long; past `perTurn` in one turn the rest wait, in order, for later turns, with I/O
 * polled in between.
 */
import { DEFERRED_COMPACT_AT } from './constants.js';

export class TurnQueue<T> {
  private taken = 0;
  private scheduled = false;
  private queue: (T | undefined)[] = [];
  private head = 0;
  private gate: (() => number) | null = null;
  private onHeld: ((n: number) => void) | null = null;
  /** Queue index below which waiting items were already reported held by the gate. */
  private heldUpTo = 0;

  /** `resume` runs a waiting item in a later turn; it calls take() itself (an item that has gone takes none). */
  constructor(
    private readonly perTurn: number,
    private readonly resume: (item: T, queue: TurnQueue<T>) => void,
  ) {}

  /** Items waiting now. */
  get waiting(): number {
    return this.queue.length - this.head;
  }

  /**
   * On top of the per-turn limit: `gate` says how many ms until the next item may run (0: now), e.g. a
   * ShareBudget's; waiting items then resume from a timer, not the next turn. `onHeld` hears how many
   * waiting items the gate held (each once). null: the limit only.
   */
  setGate(gate: (() => number) | null, onHeld: ((n: number) => void) | null = null): void {
    this.gate = gate;
    this.onHeld = gate === null ? null : onHeld;
  }

  /** Whether one more may run in this turn, counting it; false: the caller defers its item. */
  take(): boolean {
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.nextTurn);
    }
    if (this.taken >= this.perTurn) return false;
    if (this.gate !== null && this.gate() > 0) return false;
    this.taken++;
    return true;
  }

  /** An item that got no turn (take() was false): resumed, in order, in a later one. */
  defer(item: T): void {
    this.queue.push(item);
  }

  private readonly nextTurn = (): void => {
    this.scheduled = false;
    this.taken = 0;
    const q = this.queue;
    let waitMs = 0;
    while (this.head < q.length && this.taken < this.perTurn) {
      // Checked before an item is resumed: one the gate refused would defer itself again, behind the rest.
      if (this.gate !== null && (waitMs = this.gate()) > 0) break;
      const item = q[this.head]!;
      q[this.head++] = undefined;
      this.resume(item, this);
    }
    if (waitMs > 0) this.noteHeld();
    if (this.head === q.length) {
      this.queue = [];
      this.head = 0;
      this.heldUpTo = 0;
    } else {
      if (this.head > DEFERRED_COMPACT_AT) {
        this.queue = q.slice(this.head);
        this.heldUpTo = Math.max(0, this.heldUpTo - this.head);
        this.head = 0;
      }
      // Every item of this turn had gone (none took), or the gate holds them: the rest still needs a turn.
      if (!this.scheduled) {
        this.scheduled = true;
        if (waitMs > 0) setTimeout(this.nextTurn, waitMs);
        else setImmediate(this.nextTurn);
      }
    }
  };

  /** Reports the waiting items the gate holds that it had not held before. */
  private noteHeld(): void {
    const from = Math.max(this.heldUpTo, this.head);
    if (this.queue.length > from) this.onHeld?.(this.queue.length - from);
    this.heldUpTo = this.queue.length;
  }
}

/**
 * A share of wall-clock time for one kind of work: `share` of every millisecond accrues, at most `bankMs`
 * banked, and the work spends what it measured itself taking. In debt, it waits until the balance is back.
 */
export class ShareBudget {
  private balance: number;
  private at: number;

  constructor(
    readonly share: number,
    private readonly bankMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.balance = bankMs;
    this.at = now();
  }

  /** Ms until the work may run again (0: now). */
  msUntilAvailable(): number {
    this.refill();
    return this.balance >= 0 ? 0 : -this.balance / this.share;
  }

  spend(ms: number): void {
    this.refill();
    this.balance -= ms;
  }

  private refill(): void {
    const t = this.now();
    this.balance = Math.min(this.bankMs, this.balance + (t - this.at) * this.share);
    this.at = t;
  }
}

/**
 * A TurnQueue for work done in one call: offer() runs an item now, or in order in a later turn when
 * this one is full; an item that has `gone` by its turn is skipped and takes none.
 */
export class TurnRunner<T> extends TurnQueue<T> {
  constructor(
    perTurn: number,
    private readonly run: (item: T) => void,
    gone: (item: T) => boolean,
  ) {
    super(perTurn, (item, q) => {
      if (gone(item)) return;
      q.take();
      run(item);
    });
  }

  /** Runs `item` in this turn if there is room (true), else queues it for a later one (false). */
  offer(item: T): boolean {
    if (!this.take()) {
      this.defer(item);
      return false;
    }
    this.run(item);
    return true;
  }
}
