/** The bucketed sliding window: counts, slides, saturates, evicts. */
import { describe, expect, it } from 'vitest';
import { ABUSE_KINDS, MAX_THRESHOLD, WINDOW_BUCKETS } from '../../src/lib/abuse/index.js';
import { WindowTable } from '../../src/lib/abuse/window.js';

const FANOUT = ABUSE_KINDS.indexOf('fanout');
const ABSENT = ABUSE_KINDS.indexOf('absent_peer');

describe('WindowTable', () => {
  const W = 60_000;
  const step = W / WINDOW_BUCKETS;

  it('counts events per identity and kind within the window', () => {
    const t = new WindowTable(W, 10);
    for (let i = 0; i < 5; i++) t.add('a', FANOUT, 1000 + i);
    t.add('a', ABSENT, 1000);
    t.add('b', FANOUT, 1000);
    expect(t.count('a', FANOUT, 1000)).toBe(5);
    expect(t.count('a', ABSENT, 1000)).toBe(1);
    expect(t.count('b', FANOUT, 1000)).toBe(1);
    expect(t.count('c', FANOUT, 1000)).toBe(0);
  });

  it('slides: events leave one bucket at a time, and all of them after a whole window', () => {
    const t = new WindowTable(W, 10);
    // One event at the start of each of the six buckets.
    for (let i = 0; i < WINDOW_BUCKETS; i++) t.add('a', FANOUT, i * step);
    expect(t.count('a', FANOUT, (WINDOW_BUCKETS - 1) * step)).toBe(WINDOW_BUCKETS);
    // One bucket later the oldest event has left the window.
    expect(t.count('a', FANOUT, WINDOW_BUCKETS * step)).toBe(WINDOW_BUCKETS - 1);
    expect(t.count('a', FANOUT, (WINDOW_BUCKETS + 2) * step)).toBe(WINDOW_BUCKETS - 3);
    // A long silence clears everything.
    expect(t.count('a', FANOUT, 10 * W)).toBe(0);
    t.add('a', FANOUT, 10 * W);
    expect(t.count('a', FANOUT, 10 * W)).toBe(1);
  });

  it('a clock that goes back counts into the newest bucket', () => {
    const t = new WindowTable(W, 10);
    t.add('a', FANOUT, 5 * step);
    t.add('a', FANOUT, 2 * step);
    expect(t.count('a', FANOUT, 5 * step)).toBe(2);
  });

  it('saturates at MAX_THRESHOLD instead of wrapping', () => {
    const t = new WindowTable(W, 10);
    for (let i = 0; i < MAX_THRESHOLD + 10; i++) t.add('a', FANOUT, i % WINDOW_BUCKETS === 0 ? 0 : step * (i % WINDOW_BUCKETS) / 2);
    expect(t.count('a', FANOUT, 3 * step)).toBe(MAX_THRESHOLD);
  });

  it('keeps at most maxTracked identities, evicting one not seen again first (CLOCK)', () => {
    const t = new WindowTable(W, 3);
    t.add('a', FANOUT, 0);
    t.add('b', FANOUT, 0);
    t.add('c', FANOUT, 0);
    t.add('a', FANOUT, 1); // a is seen again
    t.add('d', FANOUT, 2); // the hand passes a (seen: spared) and takes b
    expect(t.size).toBe(3);
    expect(t.evictions).toBe(1);
    expect(t.count('b', FANOUT, 2)).toBe(0);
    expect(t.count('a', FANOUT, 2)).toBe(2);
    expect(t.count('c', FANOUT, 2)).toBe(1);
    // Churn of one-off identities never pushes out one that keeps coming back.
    for (let i = 0; i < 1000; i++) {
      t.add(`x${i}`, FANOUT, 3);
      t.add('a', FANOUT, 3);
    }
    expect(t.size).toBe(3);
    expect(t.count('a', FANOUT, 3)).toBe(1002);
  });

  it('a forgotten identity frees its slot', () => {
    const t = new WindowTable(W, 2);
    t.add('a', FANOUT, 0);
    t.add('b', FANOUT, 0);
    t.forget('a');
    t.add('c', FANOUT, 0);
    expect(t.evictions).toBe(0);
    expect(t.count('b', FANOUT, 0)).toBe(1);
    expect(t.size).toBe(2);
  });

  it('a new window length restarts the counts', () => {
    const t = new WindowTable(W, 10);
    t.add('a', FANOUT, 0);
    t.setWindow(W);
    expect(t.count('a', FANOUT, 0)).toBe(1);
    t.setWindow(2 * W);
    expect(t.count('a', FANOUT, 0)).toBe(0);
  });
});
