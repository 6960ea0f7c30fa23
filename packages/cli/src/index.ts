/**
 * @multimeditron/cli: the `multimeditron` command.
 * @packageDocumentation
 */
import 'reflect-metadata';
import { Command, CommanderError } from 'commander';
import { registerCheckDataset } from './commands/check-dataset.js';
import { registerConfig } from './commands/config.js';
import { registerCreatePlugin } from './commands/create-plugin.js';
import { registerEmbed } from './commands/embed.js';
import { registerFeatures } from './commands/features.js';
import { registerGenerate } from './commands/generate.js';
import { registerTrain } from './commands/train.js';
import { registerDoctor } from './commands/doctor.js';
import { registerPlugins } from './commands/plugins.js';
import { EXIT_USAGE, exitCodeFor, printError } from './errors.js';

export { createHost, pluginSource, CLI_ROOT, type HostOptions } from './host.js';
export { CliExit, EXIT_FAILURES, EXIT_OK, EXIT_USAGE } from './errors.js';
export { runGenerate, generationOptionsFromFlags, type GenerateCommandOptions } from './commands/generate.js';
export { runTrain, runPlot, readLogHistory, renderTrainBar, EXIT_INTERRUPTED, type TrainCommandOptions } from './commands/train.js';
export { runFeatures, FEATURES_FORMAT, type FeaturesOptions } from './commands/features.js';
export { scaffoldPlugin, ScaffoldError, type ScaffoldOptions, type ScaffoldResult } from './scaffold/index.js';

/** Builds the command tree. */
export function buildProgram(): Command {
  const program = new Command('multimeditron')
    .description('MultiMeditron.ts: load, process and embed multimodal medical data with pluggable modalities')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();
  registerDoctor(program);
  registerPlugins(program);
  registerConfig(program);
  registerFeatures(program);
  registerCheckDataset(program);
  registerEmbed(program);
  registerGenerate(program);
  registerTrain(program);
  registerCreatePlugin(program);
  return program;
}

/** Runs the CLI with `argv` (without node and script) and returns the exit code. */
export async function run(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
      return EXIT_USAGE;
    }
    printError(e);
    return exitCodeFor(e);
  }
}
