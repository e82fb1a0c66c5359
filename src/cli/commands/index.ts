import type { Command } from '../command.js';
import { benchCommand } from './bench.js';
import { chatCommand } from './chat.js';
import { experimentCommand } from './experiment.js';
import { exportCommand } from './export.js';
import { forwardCommand } from './forward.js';
import { generateCommand, sampleCommand } from './generate.js';
import { pipelineCommand } from './pipeline.js';
import { reportCommand } from './report.js';
import { serveCommand } from './serve.js';
import { trainCommand } from './train.js';
import { trainStepCommand } from './train-step.js';

/** Every dsv3 command, in the order `dsv3 --help` lists them. */
export const commands: Command[] = [benchCommand, forwardCommand, trainCommand, trainStepCommand, generateCommand, sampleCommand, chatCommand, serveCommand, reportCommand, pipelineCommand, experimentCommand, exportCommand];
