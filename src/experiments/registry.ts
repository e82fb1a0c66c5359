/** Every experiment of `dsv3 experiment`, in the order `dsv3 experiment list` prints them. */
import { balanceExperiment } from './balance.js';
import { biasUpdateExperiment } from './bias-update.js';
import type { Experiment } from './experiment.js';
import { mlaExperiment } from './mla.js';
import { dualpipeExperiment } from './dualpipe.js';
import { balanceScopeExperiment } from './balance-scope.js';
import { routingSim } from './routing-sim.js';
import { fp8Experiment } from './fp8.js';
import { mtpExperiment } from './mtp.js';

export const experiments: readonly Experiment[] = [routingSim, balanceExperiment, biasUpdateExperiment, mlaExperiment,
  mtpExperiment, fp8Experiment, balanceScopeExperiment, dualpipeExperiment];
