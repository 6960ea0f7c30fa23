/** `multimeditron create-plugin` (being written). */
import type { Command } from 'commander';

export function registerCreatePlugin(_program: Command): void {
  // not yet available
}
