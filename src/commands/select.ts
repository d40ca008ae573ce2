import { Command, Flags } from '@oclif/core';
import Table from 'cli-table3';
import { derpUrlOf } from '../lib/derpmap/addr.js';
import { describeError } from '../lib/errors.js';
import { NoHealthyServerError } from '../lib/errors.js';
import { EXIT_NO_HEALTHY_SERVER, SELECT_EXIT_CODES_HELP, selectExitCode, setupSelection, type Candidate } from '../lib/select/index.js';

/** Version marker of the --json document (schemas/select.schema.json). */
export const SELECT_SCHEMA_ID = 'derp.select/v1';

const fmtMs = (ms: number | null) => (ms === null ? '-' : `${ms.toFixed(1)} ms`);

export default class Select extends Command {
  static override summary = 'Measure a DERP map and pick the home region/node, showing why';
  static override description = `Runs netcheck (STUN, HTTPS fallback) over the map's regions and one DERP connect to every relay node, then ranks them. A node is healthy when its region answered a probe and its DERP connect succeeded (within the last 5 min 5 s). The home is the healthy region with the lowest latency (× HomeParams.RegionScore); Avoid and NoMeasureNoHome regions are never home.

Exit codes:
  0  a home was chosen
  2  bad usage (unknown --region / --exclude)
${SELECT_EXIT_CODES_HELP}`;

  static override examples = [
    '<%= config.bin %> select --map https://login.tailscale.com/derpmap/default',
    '<%= config.bin %> select --map derpmap.json --region fra --region nyc --exclude 1b --json',
  ];

  static override flags = {
    map: Flags.string({ description: 'DERP map: URL, file or "-" (stdin)', required: true }),
    region: Flags.string({ description: 'only these regions (ID or code; repeatable)', multiple: true }),
    exclude: Flags.string({ description: 'leave out a region (ID or code) or node (name); repeatable', multiple: true }),
    'probe-timeout': Flags.integer({ description: 'DERP connect probe budget per node, ms', default: 5_000, min: 1 }),
    'no-netcheck': Flags.boolean({ description: 'rank by DERP connect time only (no STUN/HTTPS netcheck)', default: false }),
    json: Flags.boolean({ description: 'machine-readable output (schema derp.select/v1, schemas/select.schema.json)', default: false }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Select);
    let setup;
    try {
      setup = await setupSelection({
        map: flags.map,
        regions: flags.region ?? [],
        exclude: flags.exclude ?? [],
        probeTimeoutMs: flags['probe-timeout'],
        netcheck: !flags['no-netcheck'],
      });
    } catch (err) {
      return this.error(describeError(err), { exit: selectExitCode(err) ?? 1 });
    }
    const { selector, result } = setup;
    const cands = selector.rank();
    const home = cands.find((c) => c.chosen);
    if (flags.json) {
      this.log(
        JSON.stringify({
          schema: SELECT_SCHEMA_ID,
          home: home ? { regionId: home.regionId, regionCode: home.regionCode, node: home.node, url: derpUrlOf(home.server), latencyMs: home.latencyMs, score: home.score, reason: home.reason } : null,
          latencySource: result.latencySource,
          ...(result.netcheckError ? { netcheckError: result.netcheckError } : {}),
          candidates: cands.map(jsonCandidate),
        }),
      );
    } else {
      const table = new Table({ head: ['', 'Region', 'Node', 'Latency', 'Method', 'Healthy', 'Score', 'Reason'], style: { head: [] } });
      for (const c of cands) {
        table.push([c.chosen ? '*' : '', `${c.regionId} ${c.regionCode}`, c.node, fmtMs(c.latencyMs), c.method ?? '-', c.healthy ? 'yes' : 'no', fmtMs(c.score), c.reason]);
      }
      this.log(table.toString());
      if (home) this.log(`home: region ${home.regionId} (${home.regionCode}) node ${home.node} ${derpUrlOf(home.server)} — ${home.reason}`);
      if (result.netcheckError) this.warn(`netcheck failed (${result.netcheckError}); ranked by DERP connect time`);
    }
    if (!home) {
      const err = new NoHealthyServerError('no healthy server: nothing passed the filters, answered a probe and accepted a DERP connection');
      if (flags.json) this.exit(EXIT_NO_HEALTHY_SERVER);
      this.error(err.message, { exit: EXIT_NO_HEALTHY_SERVER });
    }
  }
}

function jsonCandidate(c: Candidate) {
  return {
    regionId: c.regionId,
    regionCode: c.regionCode,
    node: c.node,
    url: derpUrlOf(c.server),
    latencyMs: c.latencyMs,
    method: c.method,
    score: c.score,
    healthy: c.healthy,
    eligible: c.eligible,
    homeEligible: c.homeEligible,
    connect: c.connect,
    chosen: c.chosen,
    rank: c.rank,
    reason: c.reason,
  };
}
