import { Args, Command, Flags } from '@oclif/core';
import Table from 'cli-table3';
import { DEFAULT_DERP_MAP_URL, DERP_MAP_FORMATS, loadDerpMap, regionsOf, toTailscaleJson, type DerpMapFormatOption, type DERPRegion, type DERPServer } from '../../lib/derpmap/index.js';
import { MAP_EXIT_CODES_HELP, mapExitCode } from '../../lib/derpmap/exit.js';
import { describeError } from '../../lib/errors.js';

/** Version marker of the --json document (schemas/map-show.schema.json). */
export const MAP_SHOW_SCHEMA_ID = 'derp.map.show/v1';

export default class MapShow extends Command {
  static override description = `Show a DERP map as a table: regions and their nodes (addresses, ports, flags)

<source> is a URL, a file (path or file:// URL) or "-" for stdin; default: Tailscale's public map
(${DEFAULT_DERP_MAP_URL}). Tailscale JSON, the seed's JSON and the seed's YAML deployment form are detected.

${MAP_EXIT_CODES_HELP}`;
  static override examples = ['<%= config.bin %> map show', '<%= config.bin %> map show derpmap.json --json', 'cat deploy.yaml | <%= config.bin %> map show -'];
  static override enableJsonFlag = true;
  static override args = { source: Args.string({ description: 'URL, file or "-" (stdin)', default: DEFAULT_DERP_MAP_URL }) };
  static override flags = {
    from: Flags.string({ description: 'input schema', options: [...DERP_MAP_FORMATS], default: 'auto' }),
    timeout: Flags.integer({ description: 'fetch timeout in milliseconds', default: 10_000, min: 1 }),
  };

  async run(): Promise<unknown> {
    const { args, flags } = await this.parse(MapShow);
    let loaded;
    try {
      loaded = await loadDerpMap(args.source, { format: flags.from as DerpMapFormatOption, timeoutMs: flags.timeout });
    } catch (err) {
      this.error(describeError(err), { exit: mapExitCode(err) });
    }
    const regions = regionsOf(loaded.map);
    const table = new Table({ head: ['Region', 'Code', 'Name', 'Node', 'Host', 'IPv4', 'IPv6', 'STUN', 'DERP', 'Flags'], style: { head: [] } });
    for (const r of regions) {
      r.nodes.forEach((n, i) => {
        table.push([i === 0 ? String(r.regionId) : '', i === 0 ? r.regionCode : '', i === 0 ? r.regionName : '', n.id, n.hostname, n.ipv4 || 'DNS', n.ipv6 || 'DNS',
          n.canStun ? String(n.stunPort) : '-', n.canRelay ? String(n.derpPort) : '-', flagsOf(r, n, i).join(', ')]);
      });
    }
    this.log(`${loaded.source} (${loaded.format}): ${regions.length} regions, ${regions.reduce((a, r) => a + r.nodes.length, 0)} nodes`);
    this.log(table.toString());
    return { schema: MAP_SHOW_SCHEMA_ID, source: loaded.source, format: loaded.format, map: toTailscaleJson(loaded.map) };
  }
}

function flagsOf(r: DERPRegion, n: DERPServer, index: number): string[] {
  const f: string[] = [];
  if (!n.canRelay) f.push('STUN-only');
  if (!n.canStun) f.push('no STUN');
  if (index === 0 && r.avoid) f.push('avoid');
  if (index === 0 && r.noMeasureNoHome) f.push('no-measure-no-home');
  if (n.certName?.startsWith('sha256-raw:')) f.push('pinned cert');
  else if (n.certName) f.push(`cert ${n.certName}`);
  if (n.insecureForTests) f.push('insecure');
  if (n.canPort80) f.push('port 80');
  if (n.stunTestIP) f.push(`STUN test IP ${n.stunTestIP}`);
  if (n.plainHttp) f.push('plain HTTP');
  return f;
}
