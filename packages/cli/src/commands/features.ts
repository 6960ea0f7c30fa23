/** `multimeditron features` (being written). */
import type { Command } from 'commander';

export function registerFeatures(_program: Command): void {
  // not yet available
}
