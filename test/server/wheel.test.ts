/** DueWheel: items by due time in slots; a tick takes only what is due. */
import { beforeEach, describe, expect, it } from 'vitest';
import { DueWheel } from '../../src/lib/server/wheel.js';

/** Named items; the wheel keeps its slot on each. */
const items = new Map<string | number, { name: string | number; wheelSlot: number }>();
const it_ = (name: string | number): { name: string | number; wheelSlot: number } => {
  let x = items.get(name);
  if (x === undefined) items.set(name, (x = { name, wheelSlot: -1 }));
  return x;
};
const names = (xs: { name: string | number }[]): (string | number)[] => xs.map((x) => x.name);

describe('DueWheel', () => {
  beforeEach(() => items.clear());

  it('takes items once their slot has begun, not before, each once', () => {
    const w = new DueWheel<{ name: string | number; wheelSlot: number }>(100, 1000);
    w.schedule(it_('a'), 1150);
    w.schedule(it_('b'), 1199);
    w.schedule(it_('c'), 1250);
    expect(names(w.takeDue(1099, []))).toEqual([]);
    expect(names(w.takeDue(1100, [])).sort()).toEqual(['a', 'b']);
    expect(names(w.takeDue(1100, []))).toEqual([]);
    expect(w.size).toBe(1);
    expect(names(w.takeDue(1300, []))).toEqual(['c']);
    expect(w.size).toBe(0);
  });

  it('reschedules an item into one slot only, and removes it in O(1)', () => {
    const w = new DueWheel<{ name: string | number; wheelSlot: number }>(100, 0);
    w.schedule(it_('a'), 500);
    w.schedule(it_('a'), 900);
    expect(w.size).toBe(1);
    expect(names(w.takeDue(600, []))).toEqual([]);
    w.remove(it_('a'));
    w.remove(it_('a'));
    expect(w.size).toBe(0);
    expect(names(w.takeDue(1000, []))).toEqual([]);
  });

  it('puts a time already past into the next slot a tick takes', () => {
    const w = new DueWheel<{ name: string | number; wheelSlot: number }>(100, 0);
    expect(names(w.takeDue(500, []))).toEqual([]);
    w.schedule(it_('late'), 100);
    expect(names(w.takeDue(550, []))).toEqual([]);
    expect(names(w.takeDue(600, []))).toEqual(['late']);
  });

  it('after a long stall takes every due item, and leaves later ones', () => {
    const w = new DueWheel<{ name: string | number; wheelSlot: number }>(10, 0);
    for (let i = 0; i < 50; i++) w.schedule(it_(i), i * 1000);
    const got = names(w.takeDue(1e9, [])) as number[];
    expect(got.sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    w.schedule(it_(99), 2e9);
    expect(names(w.takeDue(1.5e9, []))).toEqual([]);
    expect(names(w.takeDue(2e9, []))).toEqual([99]);
  });

  it('refuses a slot length that is not positive', () => {
    expect(() => new DueWheel(0, 0)).toThrow(RangeError);
  });
});
