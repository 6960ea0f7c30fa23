import type { Config } from 'jest';

// One jest project per package. Tests run against the TypeScript sources (ts-jest, ESM); the workspace
// packages are mapped to their src/ so that a test never runs stale dist/ code. Child processes (the CLI)
// run the built dist/, which `npm test` builds first.
const tsJest: [string, Record<string, unknown>] = [
  'ts-jest',
  { useESM: true, tsconfig: '<rootDir>/tsconfig.test.json' },
];

const moduleNameMapper = {
  '^@multimeditron/core$': '<rootDir>/packages/core/src/index.ts',
  '^@multimeditron/llm$': '<rootDir>/packages/llm/src/index.ts',
  '^@multimeditron/train$': '<rootDir>/packages/train/src/index.ts',
  '^@multimeditron/plugin-image$': '<rootDir>/plugins/image/src/index.ts',
  '^@multimeditron/plugin-audio$': '<rootDir>/plugins/audio/src/index.ts',
  '^@multimeditron/cli$': '<rootDir>/packages/cli/src/index.ts',
  '^(\\.{1,2}/.*)\\.js$': '$1',
};

function project(name: string, dir: string): Config {
  return {
    displayName: name,
    rootDir: '.',
    testMatch: [`<rootDir>/${dir}/test/**/*.test.ts`],
    extensionsToTreatAsEsm: ['.ts'],
    transform: { '^.+\\.ts$': tsJest },
    moduleNameMapper,
    testEnvironment: 'node',
  };
}

const config: Config = {
  projects: [
    project('core', 'packages/core'),
    project('llm', 'packages/llm'),
    project('train', 'packages/train'),
    project('cli', 'packages/cli'),
    project('plugin-image', 'plugins/image'),
    project('plugin-audio', 'plugins/audio'),
    project('plugin-volume', 'examples/plugin-volume'),
    project('repo', '.'),
  ],
  testTimeout: 120_000,
};

export default config;
