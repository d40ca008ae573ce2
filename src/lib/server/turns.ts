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

  /** `resume` runs a waiting item in a later turn; it calls take() itself (an item that has gone takes none). */
  constructor(
    private readonly perTurn: number,
    private readonly resume: (item: T, queue: TurnQueue<T>) => void,
  ) {}

  /** Items waiting now. */
  get waiting(): number {
    return this.queue.length - this.head;
  }

  /** Whether one more may run in this turn, counting it; false: the caller defers its item. */
  take(): boolean {
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.nextTurn);
    }
    if (this.taken >= this.perTurn) return false;
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
    while (this.head < q.length && this.taken < this.perTurn) {
      const item = q[this.head]!;
      q[this.head++] = undefined;
      this.resume(item, this);
    }
    if (this.head === q.length) {
      this.queue = [];
      this.head = 0;
    } else {
      if (this.head > DEFERRED_COMPACT_AT) {
        this.queue = q.slice(this.head);
        this.head = 0;
      }
      // Every item of this turn had gone (none took): the rest still needs a turn.
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.nextTurn);
      }
    }
  };
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
