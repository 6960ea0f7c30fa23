/** `multimeditron check-dataset` (being written). */
import type { Command } from 'commander';

export function registerCheckDataset(_program: Command): void {
  // not yet available
}
