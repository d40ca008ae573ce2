/** ShareBudget (a share of wall-clock time for one kind of work) and a TurnQueue gated by it. */
import { describe, expect, it } from 'vitest';
import { ShareBudget, TurnRunner } from '../../src/lib/server/turns.js';
import { until } from './helpers.js';

describe('ShareBudget', () => {
  it('accrues its share of each millisecond up to the bank, and makes work in debt wait for exactly the debt', () => {
    let t = 0;
    const b = new ShareBudget(0.25, 2, () => t);
    // The bank is full at the start: a lone piece of work never waits.
    expect(b.msUntilAvailable()).toBe(0);
    b.spend(3);
    // 1 ms in debt at a quarter of each ms: 4 ms.
    expect(b.msUntilAvailable()).toBe(4);
    t = 2;
    expect(b.msUntilAvailable()).toBe(2);
    t = 4;
    expect(b.msUntilAvailable()).toBe(0);
    // An idle hour banks no more than the bank.
    t = 3_600_000;
    b.spend(2);
    expect(b.msUntilAvailable()).toBe(0);
    b.spend(0.5);
    expect(b.msUntilAvailable()).toBe(2);
  });
});

describe('a TurnQueue with a gate', () => {
  it('holds every item while the gate says wait, then runs them all, in order, one turn\'s worth at a time', async () => {
    let waitMs = 5;
    let checks = 0;
    let held = 0;
    const ran: number[] = [];
    const q = new TurnRunner<number>(2, (n) => ran.push(n), () => false);
    q.setGate(
      () => {
        checks++;
        return waitMs;
      },
      (n) => (held += n),
    );
    for (let i = 0; i < 7; i++) q.offer(i);
    expect(ran).toEqual([]);
    await until(() => held === 7, 'the waiting items reported held');
    // Asked again from timers while it holds them (not spun on), each held item still counted once.
    const asked = checks;
    await until(() => checks >= asked + 2, 'the gate was asked again');
    expect(ran).toEqual([]);
    expect(q.waiting).toBe(7);
    expect(held).toBe(7);
    q.offer(7);
    await until(() => held === 8, 'the newcomer counted as held');
    waitMs = 0;
    await until(() => ran.length === 8, 'every item ran');
    expect(ran).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(q.waiting).toBe(0);
    expect(held).toBe(8);
  });

  it('without a gate (or with it removed) only the per-turn limit applies', () => {
    const ran: number[] = [];
    const q = new TurnRunner<number>(2, (n) => ran.push(n), () => false);
    q.setGate(() => 10);
    q.setGate(null);
    for (let i = 0; i < 3; i++) q.offer(i);
    expect(ran).toEqual([0, 1]);
  });
});
