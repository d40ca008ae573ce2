import { Args, Command, Flags } from '@oclif/core';
import { ConfigFileError, formatConfigIssue, loadConfigFile, resolveServeConfig, summarizeServeConfig } from '../../lib/config/index.js';

/** Version marker of the --json document (schemas/config-check.schema.json). */
export const CONFIG_CHECK_SCHEMA_ID = 'derp.config.check/v1';

/** Exit code for an invalid (or unreadable) file, as `derp serve` exits on it. */
const EXIT_INVALID = 2;

export default class ConfigCheck extends Command {
  static override description = `Check a serve configuration file (YAML or JSON) without starting anything

Reads FILE as \`derp serve --config FILE\` would (without flags): the schema, unknown fields, the deployment form (derp.servers) and the cross-field rules. Every problem is listed, one per line, with file, line and column:
  derp.yaml:14:9 stun.port: expected an integer from 0 to 65535, found "fast"

Exit codes:
  0  valid (one summary line)
  2  invalid or unreadable (every problem listed)`;
  static override examples = ['<%= config.bin %> config check /etc/derp/derp.yaml', '<%= config.bin %> config check derp.json --json'];
  static override args = { file: Args.string({ description: 'the configuration file', required: true }) };
  static override flags = { json: Flags.boolean({ description: 'machine output (schema derp.config.check/v1): {schema, valid, file, summary, config} or {schema, valid, file, issues}' }) };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(ConfigCheck);
    try {
      const config = resolveServeConfig(await loadConfigFile(args.file));
      const summary = summarizeServeConfig(config);
      if (flags.json) this.log(JSON.stringify({ schema: CONFIG_CHECK_SCHEMA_ID, valid: true, file: args.file, summary, config }));
      else this.log(`${args.file}: valid: ${summary}`);
    } catch (err) {
      if (!(err instanceof ConfigFileError)) throw err;
      if (flags.json) this.log(JSON.stringify({ schema: CONFIG_CHECK_SCHEMA_ID, valid: false, file: args.file, issues: err.issues }));
      else process.stderr.write(err.issues.map((i) => `${formatConfigIssue(i)}\n`).join(''));
      this.exit(EXIT_INVALID);
    }
  }
}
