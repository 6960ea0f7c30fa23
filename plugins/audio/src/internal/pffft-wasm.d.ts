// Ambient types for @echogarden/pffft-wasm (the package ships none). Only what src/internal/fft.ts uses.
declare module '@echogarden/pffft-wasm/simd' {
  import type { PffftModule } from './pffft-types.js';
  const factory: (options?: Record<string, unknown>) => Promise<PffftModule>;
  export default factory;
}
declare module '@echogarden/pffft-wasm' {
  import type { PffftModule } from './pffft-types.js';
  const factory: (options?: Record<string, unknown>) => Promise<PffftModule>;
  export default factory;
}
