import type { Command } from '../command.js';
import { benchCommand } from './bench.js';

/** Every dsv3 command, in the order `dsv3 --help` lists them. */
export const commands: Command[] = [benchCommand];
