/**
 * A bounded FIFO with async consumers. Producers never block: when full, the oldest item is dropped
 * and counted (a relay is lossy anyway, and a stalled consumer must not stall the socket reader).
 */
export class BoundedQueue<T> {
  private items: T[] = [];
  private head = 0;
  private waiters: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }[] = [];
  private ended = false;
  /** Items dropped because the queue was full. */
  dropped = 0;

  constructor(readonly limit: number) {
    if (!(limit >= 1)) throw new RangeError(`queue limit must be ≥ 1, got ${limit}`);
  }

  get length(): number {
    return this.items.length - this.head;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  push(item: T): void {
    if (this.ended) return;
    const w = this.waiters.shift();
    if (w) {
      w.resolve({ value: item, done: false });
      return;
    }
    if (this.length >= this.limit) {
      this.items[this.head] = undefined as T;
      this.head++;
      this.dropped++;
    }
    this.items.push(item);
    // Compact occasionally so the array doesn't grow without bound.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  /** Removes and returns everything queued. */
  drain(): T[] {
    const out = this.items.slice(this.head);
    this.items = [];
    this.head = 0;
    return out;
  }

  /** Wakes every waiting consumer with `done`; later pushes are ignored until `reopen`. */
  end(): void {
    this.ended = true;
    for (const w of this.waiters.splice(0)) w.resolve({ value: undefined, done: true });
  }

  reopen(): void {
    this.ended = false;
  }

  next(signal?: AbortSignal): Promise<IteratorResult<T>> {
    if (this.length > 0) {
      const value = this.items[this.head]!;
      this.items[this.head] = undefined as T;
      this.head++;
      if (this.head === this.items.length) {
        this.items = [];
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (r: IteratorResult<T>) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(r);
        },
        reject,
      };
      const onAbort = () => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** An async iterator over the queue; ends when `end()` is called, throws the abort reason on abort. */
  iterate(signal?: AbortSignal): AsyncIterableIterator<T> {
    let finished = false;
    const it: AsyncIterableIterator<T> = {
      next: async () => {
        if (finished) return { value: undefined, done: true };
        const r = await this.next(signal);
        if (r.done) finished = true;
        return r;
      },
      return: async () => {
        finished = true;
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }
}
