/**
 * Every TypeScript sample in the guides compiles. The ```ts blocks of docs/*.md, README.md and the example
 * plugin's README are type-checked in one TypeScript program, with the repository's compiler options
 * (tsconfig.base.json) and the workspace packages mapped to their sources. Each block is its own ES module
 * (a virtual `.mts` file), so it must carry its own imports. A walkthrough whose blocks build on each other
 * names them as files, ```ts file=src/config.ts, and a later block of the same document imports it as
 * `./config.js`. A block opts out only with a visible marker: ```ts no-check (for pseudo-code; use sparingly).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { REPO_ROOT } from './helpers/fixtures.js';

/** One fenced TypeScript block. */
interface Block {
  doc: string;
  /** 1-based line of the first code line in the Markdown file. */
  line: number;
  code: string;
  checked: boolean;
  /** The `file=` name given in the fence, if any. */
  file?: string;
}

/** Extracts ```ts / ```typescript blocks; other fences (and ts fences nested in them) are skipped. */
export function extractBlocks(doc: string, text: string): Block[] {
  const lines = text.split('\n');
  const out: Block[] = [];
  let open: { fence: string; ts: boolean; checked: boolean; file?: string; start: number; body: string[] } | undefined;
  lines.forEach((raw, i) => {
    const m = /^\s*(`{3,}|~{3,})\s*([^\s`]*)\s*(.*)$/.exec(raw);
    if (open) {
      if (m && m[1]!.startsWith(open.fence) && m[1]![0] === open.fence[0] && m[2] === '' && m[3] === '') {
        if (open.ts) {
          out.push({ doc, line: open.start, code: open.body.join('\n'), checked: open.checked, ...(open.file ? { file: open.file } : {}) });
        }
        open = undefined;
      } else {
        open.body.push(raw);
      }
      return;
    }
    if (m) {
      const lang = m[2]!.toLowerCase();
      const isTs = lang === 'ts' || lang === 'typescript' || lang === 'mts';
      const file = /(?:^|\s)file=(\S+)/.exec(m[3]!)?.[1];
      open = { fence: m[1]!, ts: isTs, checked: isTs && !/\bno-check\b/.test(m[3]!), start: i + 2, body: [], ...(file ? { file } : {}) };
    }
  });
  return out;
}

const DOCS_DIR = path.join(REPO_ROOT, 'docs');
const docFiles = [
  ...readdirSync(DOCS_DIR).filter((f) => f.endsWith('.md')).map((f) => path.join('docs', f)),
  'README.md',
  path.join('examples', 'plugin-volume', 'README.md'),
].filter((f) => existsSync(path.join(REPO_ROOT, f)));

const PATHS: Record<string, string[]> = {
  '@multimeditron/core': ['packages/core/src/index.ts'],
  '@multimeditron/llm': ['packages/llm/src/index.ts'],
  '@multimeditron/train': ['packages/train/src/index.ts'],
  '@multimeditron/cli': ['packages/cli/src/index.ts'],
  '@multimeditron/plugin-image': ['plugins/image/src/index.ts'],
  '@multimeditron/plugin-audio': ['plugins/audio/src/index.ts'],
  '@multimeditron-examples/plugin-volume': ['examples/plugin-volume/src/index.ts'],
};

const blocks = docFiles.flatMap((f) => extractBlocks(f, readFileSync(path.join(REPO_ROOT, f), 'utf8')));
/** Virtual file of each checked block, inside the repository so that node_modules resolve. */
const virtual = new Map<string, Block>();
blocks.filter((b) => b.checked).forEach((b) => {
  const dir = path.join(REPO_ROOT, '.docs-examples', b.doc.replace(/[\\/.]/g, '_'));
  const file = b.file ? path.join(dir, b.file) : path.join(dir, `L${b.line}.mts`);
  if (virtual.has(file)) throw new Error(`${b.doc}:${b.line}: file=${b.file} is used twice`);
  virtual.set(file, b);
});

function compilerOptions(): ts.CompilerOptions {
  const file = path.join(REPO_ROOT, 'tsconfig.base.json');
  const { config, error } = ts.readConfigFile(file, (f) => ts.sys.readFile(f));
  if (error) throw new Error(ts.flattenDiagnosticMessageText(error.messageText, '\n'));
  const parsed = ts.parseJsonConfigFileContent(config, ts.sys, REPO_ROOT, undefined, file);
  return {
    ...parsed.options,
    noEmit: true,
    composite: false,
    declaration: false,
    declarationMap: false,
    sourceMap: false,
    incremental: false,
    rootDir: undefined,
    baseUrl: REPO_ROOT,
    paths: PATHS,
  };
}

let diagnostics = new Map<string, string[]>();

beforeAll(() => {
  const options = compilerOptions();
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  const { directoryExists } = host;
  const virtualDirs = new Set([...virtual.keys()].flatMap((f) => {
    const dirs: string[] = [];
    for (let d = path.dirname(f); d.startsWith(REPO_ROOT) && d !== REPO_ROOT; d = path.dirname(d)) dirs.push(d);
    return dirs;
  }));
  host.directoryExists = (d) => virtualDirs.has(path.resolve(d)) || (directoryExists ? directoryExists.call(host, d) : ts.sys.directoryExists(d));
  host.fileExists = (f) => virtual.has(path.resolve(f)) || fileExists.call(host, f);
  host.readFile = (f) => virtual.get(path.resolve(f))?.code ?? readFile.call(host, f);
  host.getSourceFile = (f, lang, onError, create) => {
    const b = virtual.get(path.resolve(f));
    return b ? ts.createSourceFile(f, b.code, lang, true) : getSourceFile.call(host, f, lang, onError, create);
  };
  host.getCurrentDirectory = () => REPO_ROOT;
  const program = ts.createProgram({ rootNames: [...virtual.keys()], options, host });
  const general = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()];
  if (general.length) throw new Error(ts.formatDiagnostics(general, host));
  diagnostics = new Map(docFiles.map((d) => [d, []]));
  for (const [file, b] of virtual) {
    const sf = program.getSourceFile(file)!;
    for (const d of [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)]) {
      const { line, character } = d.start === undefined ? { line: 0, character: 0 } : sf.getLineAndCharacterOfPosition(d.start);
      diagnostics.get(b.doc)!.push(`${b.doc}:${b.line + line}:${character + 1} TS${d.code}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
    }
  }
}, 120_000);

describe('the TypeScript samples of the docs compile', () => {
  test.each(docFiles)('%s', (doc) => {
    expect(diagnostics.get(doc)).toEqual([]);
  });

  test('the guides have checked samples, and opt-outs are rare', () => {
    for (const doc of ['docs/adding-a-modality.md', 'docs/writing-a-plugin.md', 'docs/embedding.md']) {
      expect({ doc, checked: blocks.filter((b) => b.doc === doc && b.checked).length > 0 }).toEqual({ doc, checked: true });
    }
    const unchecked = blocks.filter((b) => !b.checked);
    expect(unchecked.length).toBeLessThanOrEqual(Math.max(2, Math.floor(blocks.length / 5)));
  });
});

describe('block extraction', () => {
  test('ts/typescript fences, the no-check marker, and fences nested in other blocks', () => {
    const md = [
      '# t', '```ts', 'const a = 1;', '```', '```typescript no-check', 'pseudo(code)', '```',
      '````md', '```ts', 'not a block', '```', '````', '```json', '{}', '```', '~~~ts', 'let b = 2;', '~~~',
      '```ts file=src/a.ts', 'export const c = 3;', '```',
    ].join('\n');
    const got = extractBlocks('x.md', md);
    expect(got).toEqual([
      { doc: 'x.md', line: 3, code: 'const a = 1;', checked: true },
      { doc: 'x.md', line: 6, code: 'pseudo(code)', checked: false },
      { doc: 'x.md', line: 17, code: 'let b = 2;', checked: true },
      { doc: 'x.md', line: 20, code: 'export const c = 3;', checked: true, file: 'src/a.ts' },
    ]);
  });
});
