// Imports every benchmark module so it registers itself with registerBench().
import './dispatch.js';
import './memory.js';
import './kernels.js';
import './peak.js';
import './gemm.js';
import './decode.js';
import './prefill.js';
import './train.js';
import './fp8.js';
