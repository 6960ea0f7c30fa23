/**
 * `multimeditron create-plugin <name> [--dir <folder>] [--modality-type <t>] [--model-type <m>] [--force]`:
 * writes a new plugin package (package.json with the `multimeditron` field, exports map and peer
 * dependencies, tsconfig, Loader, Config, Processor, Modality, a node:test test and a README).
 * @module
 */
import path from 'node:path';
import type { Command } from 'commander';
import { scaffoldPlugin, type ScaffoldOptions } from '../scaffold/index.js';
import { EXIT_OK } from '../errors.js';

interface CreatePluginOptions {
  dir?: string;
  modalityType?: string;
  modelType?: string;
  force?: boolean;
  json?: boolean;
}

/** Registers `create-plugin`. */
export function registerCreatePlugin(program: Command): void {
  program
    .command('create-plugin <name>')
    .description('generate a plugin package: manifest, Loader, Config, Processor, Modality, test and README')
    .option('--dir <folder>', 'where to write it (default: ./<last part of the name>)')
    .option('--modality-type <type>', 'dataset "type" the plugin handles; also names the loaders fs-<type>, raw-<type>', 'vector')
    .option('--model-type <name>', 'registry name of the modality (default: <type>_linear)')
    .option('--force', 'write into a folder that is not empty')
    .option('--json', 'print the result as JSON')
    .action(async (name: string, opts: CreatePluginOptions) => {
      const options: ScaffoldOptions = { name, ...opts };
      const res = await scaffoldPlugin(options);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ dir: res.dir, files: res.files, ...res.names })}\n`);
      } else {
        const rel = path.relative(process.cwd(), res.dir) || '.';
        const lines = [
          `created ${res.names.packageName} in ${res.dir}`,
          ...res.files.map((f) => `  ${f}`),
          '',
          `modality ${res.names.modelType} (type "${res.names.modalityType}"), loaders fs-${res.names.modalityType} and raw-${res.names.modalityType}`,
          '',
          'next:',
          `  cd ${rel}`,
          '  npm install',
          '  npm run build && npm test',
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      }
      process.exitCode = EXIT_OK;
    });
}
