// The suite must run on the pinned Node 24 (devDependency `node`), not the machine's Node 20.
import { describe, expect, it } from 'vitest';

describe('runtime', () => {
  it('is Node 24 or newer', () => {
    expect(Number(process.versions.node.split('.')[0])).toBeGreaterThanOrEqual(24);
  });
});
