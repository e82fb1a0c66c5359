// Imports every benchmark module so it registers itself with registerBench().
export {};
