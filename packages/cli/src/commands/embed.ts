/** `multimeditron embed` (being written). */
import type { Command } from 'commander';

export function registerEmbed(_program: Command): void {
  // not yet available
}
