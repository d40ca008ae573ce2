import { Command } from '@oclif/core';
import { exampleConfig } from '../../lib/config/index.js';

export default class ConfigExample extends Command {
  static override description = `Print a complete, commented serve configuration (YAML) with every field

The output passes \`derp config check\`. It configures an ACME (Let's Encrypt) relay; the manual and self-signed certificate fields are present but commented out.`;
  static override examples = ['<%= config.bin %> config example > /etc/derp/derp.yaml'];

  async run(): Promise<void> {
    await this.parse(ConfigExample);
    process.stdout.write(exampleConfig());
  }
}
