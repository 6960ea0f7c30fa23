/**
 * Services handed to loaders, processors and modalities by the host (through the DI container).
 * @module
 */
import type { ModelResolver } from './hub.js';

/** Minimal logger interface; the default writes warnings and errors to stderr. */
export interface Logger {
  /** Details for debugging. */
  debug(message: string): void;
  /** Progress and choices. */
  info(message: string): void;
  /** Something is wrong but the run goes on (a plugin failed to load, a duplicate copy...). */
  warn(message: string): void;
  /** Something failed. */
  error(message: string): void;
}

/** Logger that writes warn/error to stderr and drops debug/info unless `MULTIMEDITRON_LOG=debug|info`. */
export class ConsoleLogger implements Logger {
  private readonly level: number;
  constructor(level = process.env['MULTIMEDITRON_LOG'] ?? 'warn') {
    this.level = ['debug', 'info', 'warn', 'error', 'silent'].indexOf(level);
  }
  /** Written when the level is `debug`. */
  debug(m: string): void {
    if (this.level <= 0) process.stderr.write(`[multimeditron] debug: ${m}\n`);
  }
  /** Written when the level is `info` or lower. */
  info(m: string): void {
    if (this.level <= 1) process.stderr.write(`[multimeditron] ${m}\n`);
  }
  /** Written unless the level is `error` or `silent`. */
  warn(m: string): void {
    if (this.level <= 2) process.stderr.write(`[multimeditron] warning: ${m}\n`);
  }
  /** Written unless the level is `silent`. */
  error(m: string): void {
    if (this.level <= 3) process.stderr.write(`[multimeditron] error: ${m}\n`);
  }
}

/** What a modality or processor may use while it loads. */
export interface ModalityContext {
  /** Turns a local path or hub id into a local model folder. */
  resolver: ModelResolver;
  logger: Logger;
}
