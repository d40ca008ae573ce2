import { writeFile } from 'node:fs/promises';
import { Args, Command, Flags } from '@oclif/core';
import { DERP_MAP_FORMATS, loadDerpMap, toSeedJson, toTailscaleJson, toYamlDeployment, type DerpMapFormatOption } from '../../lib/derpmap/index.js';
import { EXIT_MAP_UNREADABLE, MAP_EXIT_CODES_HELP, mapExitCode } from '../../lib/derpmap/exit.js';
import { describeError } from '../../lib/errors.js';

export default class MapConvert extends Command {
  static override description = `Convert a DERP map between Tailscale's JSON, the seed's JSON and the seed's YAML deployment form

<source> is a URL, a file (path or file:// URL) or "-" for stdin; its schema is detected (or --from).
Tailscale JSON is written with Go's key casing and omitempty; the map is validated first.

${MAP_EXIT_CODES_HELP}
  (6 also when --out cannot be written)`;
  static override examples = [
    '<%= config.bin %> map convert deploy.yaml --to tailscale --out derpmap.json',
    'curl -s https://controlplane.tailscale.com/derpmap/default | <%= config.bin %> map convert - --to yaml',
  ];
  static override args = { source: Args.string({ description: 'URL, file or "-" (stdin)', required: true }) };
  static override flags = {
    to: Flags.string({ description: 'output schema', options: ['tailscale', 'seed', 'yaml'], required: true }),
    from: Flags.string({ description: 'input schema', options: [...DERP_MAP_FORMATS], default: 'auto' }),
    out: Flags.string({ char: 'o', description: 'file to write (default: stdout)' }),
    timeout: Flags.integer({ description: 'fetch timeout in milliseconds', default: 10_000, min: 1 }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(MapConvert);
    let text: string;
    try {
      const { map } = await loadDerpMap(args.source, { format: flags.from as DerpMapFormatOption, timeoutMs: flags.timeout });
      text = flags.to === 'yaml' ? toYamlDeployment(map) : `${JSON.stringify(flags.to === 'seed' ? toSeedJson(map) : toTailscaleJson(map), null, 2)}\n`;
    } catch (err) {
      this.error(describeError(err), { exit: mapExitCode(err) });
    }
    if (!flags.out) {
      process.stdout.write(text);
      return;
    }
    try {
      await writeFile(flags.out, text);
    } catch (err) {
      this.error(`cannot write ${flags.out}: ${describeError(err)}`, { exit: EXIT_MAP_UNREADABLE });
    }
  }
}
