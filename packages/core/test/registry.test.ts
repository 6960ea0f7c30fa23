import 'reflect-metadata';
import * as tf from '@tensorflow/tfjs-core';
import { container as rootContainer } from 'tsyringe';
import {
  AutoModality, AutoModalityLoader, BaseModalityLoader, BaseModalityConfig, catalogue, CATALOGUE_KEY, ConfigValidationError,
  createMultimeditron, definePlugin, DuplicateRegistrationError, getLoaderRegistration, getModalityRegistration,
  LOADER_METADATA, MODALITY_METADATA, MultimeditronError, RegisterLoader, RegisterModality, selectBackend, TOKENS,
  UnknownRegistrationError, type ModalityInput,
} from '@multimeditron/core';
import { ArrayLoader, configClass, DenseModality, DenseProcessor } from './helpers/toy.js';

const AlphaConfig = configClass('alpha', 'signal');
const BetaConfig = configClass('beta', 'waveform');

@RegisterModality('alpha', { config: AlphaConfig, processor: DenseProcessor, encoderKey: 'encoderName', encoderModelTypes: ['dense'] })
class AlphaModality extends DenseModality {}

@RegisterModality('beta', { config: BetaConfig, processor: DenseProcessor })
class BetaModality extends DenseModality {}

@RegisterLoader('raw-signal', { modalityType: 'signal' })
class RawSignalLoader extends ArrayLoader {}

@RegisterLoader('raw-waveform', { modalityType: 'waveform' })
class RawWaveformLoader extends ArrayLoader {}

/** A loader with an options schema. */
@RegisterLoader('scaled-signal', { modalityType: 'signal' })
class ScaledSignalLoader extends BaseModalityLoader<Float32Array, { scale: number }> {
  static override optionsSchema = {
    type: 'object',
    properties: { scale: { type: 'number', exclusiveMinimum: 0, default: 1 } },
  };
  async load(m: ModalityInput): Promise<Float32Array> {
    return Float32Array.from(m.value as number[], (v) => v * this.options.scale);
  }
}

/** Decorated but never listed anywhere: must never be used. */
@RegisterModality('gamma', { config: configClass('gamma', 'signal'), processor: DenseProcessor })
class GammaModality extends DenseModality {}

beforeAll(async () => {
  await selectBackend({ backend: 'wasm' });
});

describe('decorators', () => {
  test('store the registration as metadata on the class, under Symbol.for keys', () => {
    expect(MODALITY_METADATA).toBe(Symbol.for('multimeditron.modality'));
    expect(LOADER_METADATA).toBe(Symbol.for('multimeditron.loader'));
    const reg = getModalityRegistration(AlphaModality)!;
    expect(reg).toEqual({
      name: 'alpha', modalityType: 'signal', modality: AlphaModality, config: AlphaConfig, processor: DenseProcessor,
      encoderKey: 'encoderName', encoderModelTypes: ['dense'],
    });
    expect(Reflect.getOwnMetadata(Symbol.for('multimeditron.modality'), AlphaModality)).toBe(reg);
    expect(getLoaderRegistration(RawSignalLoader)).toEqual({ name: 'raw-signal', modalityType: 'signal', loader: RawSignalLoader });
    // a subclass does not inherit its parent's registration
    class Sub extends AlphaModality {}
    expect(getModalityRegistration(Sub)).toBeUndefined();
    expect(getModalityRegistration(DenseModality)).toBeUndefined();
  });

  test('add the class to the process-wide catalogue that core owns (globalThis[Symbol.for])', () => {
    expect(CATALOGUE_KEY).toBe(Symbol.for('multimeditron.catalogue'));
    const cat = (globalThis as unknown as Record<symbol, ReturnType<typeof catalogue>>)[Symbol.for('multimeditron.catalogue')]!;
    expect(cat).toBe(catalogue());
    expect(cat.modalities.get('alpha')!.map((r) => r.modality)).toContain(AlphaModality);
    expect(cat.modalities.get('gamma')!.map((r) => r.modality)).toContain(GammaModality);
    expect(cat.loaders.get('raw-signal')!.map((r) => r.loader)).toContain(RawSignalLoader);
  });

  test('take modalityType from the config schema unless given, and reject a config naming another modality', () => {
    expect(getModalityRegistration(BetaModality)!.modalityType).toBe('waveform');
    class Explicit extends DenseModality {}
    RegisterModality('alpha', { config: AlphaConfig, processor: DenseProcessor, modalityType: 'signal' })(Explicit);
    expect(getModalityRegistration(Explicit)!.modalityType).toBe('signal');

    class Wrong extends DenseModality {}
    expect(() => RegisterModality('delta', { config: AlphaConfig, processor: DenseProcessor })(Wrong)).toThrow(
      /alphaConfig's modelType defaults to "alpha", not "delta"/,
    );
    class NoType extends DenseModality {}
    expect(() => RegisterModality('base', { config: BaseModalityConfig, processor: DenseProcessor })(NoType)).toThrow(
      expect.objectContaining({ code: 'E_REGISTRATION', message: expect.stringMatching(/pass \{ modalityType \}/) }),
    );
  });

  test("never write to tsyringe's root container, even after instances are created and used", async () => {
    const mm = await createMultimeditron({ backend: false, plugins: [definePlugin({ name: 'p', apiVersion: 1, modalities: [AlphaModality], loaders: [RawSignalLoader] })] });
    mm.register(BetaModality, RawWaveformLoader);
    const m = await mm.modalities.fromConfig({ modelType: 'alpha', hiddenSize: 2 });
    await mm.loaders.create('raw-signal').load({ type: 'signal', value: [1] });
    m.dispose();
    // nothing at all in the root registry (checked first: tsyringe's isRegistered() leaves empty entries behind)
    const rootMap = (rootContainer as unknown as { _registry: { _registryMap: Map<unknown, unknown[]> } })._registry._registryMap;
    expect(rootMap.size).toBe(0);
    for (const token of Object.values(TOKENS)) expect(rootContainer.isRegistered(token, true)).toBe(false);
    for (const cls of [AlphaModality, BetaModality, GammaModality, RawSignalLoader, RawWaveformLoader, AlphaConfig, DenseProcessor]) {
      expect(rootContainer.isRegistered(cls as never, true)).toBe(false);
    }
    // while the instance's own container has every token
    for (const token of Object.values(TOKENS)) expect(mm.container.isRegistered(token)).toBe(token !== TOKENS.Backend);
  });
});

describe('instances are isolated', () => {
  test('two instances given different programmatic registrations do not see each other\'s', async () => {
    const a = await createMultimeditron({ backend: false, plugins: [] });
    const b = await createMultimeditron({ backend: false, plugins: [] });
    a.register(AlphaModality, RawSignalLoader);
    b.register(BetaModality, RawWaveformLoader);
    expect(a.modalities.names()).toEqual(['alpha']);
    expect(b.modalities.names()).toEqual(['beta']);
    expect(a.loaders.names()).toEqual(['raw-signal']);
    expect(b.loaders.names()).toEqual(['raw-waveform']);
    expect(() => a.modalities.registration('beta')).toThrow(UnknownRegistrationError);
    expect(() => b.loaders.create('raw-signal')).toThrow(UnknownRegistrationError);
    expect(a.container).not.toBe(b.container);
    expect(a.container.resolve(TOKENS.ModalityRegistry)).toBe(a.modalityRegistry);
    expect(b.container.resolve(TOKENS.ModalityRegistry)).toBe(b.modalityRegistry);
  });

  test('two instances given different plugins do not see each other\'s', async () => {
    const pa = definePlugin({ name: 'plugin-a', version: '1.0.0', apiVersion: 1, modalities: [AlphaModality], loaders: [RawSignalLoader] });
    const pb = definePlugin({ name: 'plugin-b', version: '2.0.0', apiVersion: 1, modalities: [BetaModality], loaders: [RawWaveformLoader] });
    const a = await createMultimeditron({ backend: false, plugins: [pa] });
    const b = await createMultimeditron({ backend: false, plugins: [pb] });
    expect(a.modalities.names()).toEqual(['alpha']);
    expect(b.modalities.names()).toEqual(['beta']);
    expect(a.modalityRegistry.sourceOf('alpha')).toBe('plugin-a');
    expect(b.loaderRegistry.sourceOf('raw-waveform')).toBe('plugin-b');
    expect(a.plugins.loaded.map((p) => [p.name, p.version, p.modalities, p.loaders])).toEqual([['plugin-a', '1.0.0', ['alpha'], ['raw-signal']]]);
    expect(b.plugins.source).toBe('option');
    // a decorated class that no plugin lists is in neither
    expect(a.modalities.names()).not.toContain('gamma');
    expect(b.modalities.names()).not.toContain('gamma');
  });

  test('a host that passes its own tsyringe container gets a child of it with our TOKENS registered', async () => {
    const host = rootContainer.createChildContainer();
    host.register('hostConfig', { useValue: { answer: 42 } });
    const mm = await createMultimeditron({ container: host, backend: false, plugins: [] });
    expect(mm.container).not.toBe(host);
    // the child sees the host's registrations ...
    expect(mm.container.resolve<{ answer: number }>('hostConfig').answer).toBe(42);
    // ... and holds ours, which the host does not
    expect(mm.container.resolve(TOKENS.AutoModality)).toBe(mm.modalities);
    expect(mm.container.resolve(TOKENS.AutoModalityLoader)).toBe(mm.loaders);
    expect(mm.container.resolve(TOKENS.LoaderRegistry)).toBe(mm.loaderRegistry);
    expect(mm.container.resolve(TOKENS.ModelResolver)).toBe(mm.resolver);
    expect(mm.container.resolve(TOKENS.Logger)).toBe(mm.logger);
    expect(mm.container.resolve(TOKENS.PluginReport)).toBe(mm.plugins);
    for (const token of Object.values(TOKENS)) expect(host.isRegistered(token, true)).toBe(false);
    // a second instance on the same host container gets its own child
    const mm2 = await createMultimeditron({ container: host, backend: false, plugins: [] });
    expect(mm2.container.resolve(TOKENS.ModalityRegistry)).not.toBe(mm.modalityRegistry);
  });

  test('the backend choice is registered under TOKENS.Backend when a backend is selected', async () => {
    const mm = await createMultimeditron({ backend: 'wasm', plugins: [] });
    expect(mm.backend!.backend).toBe('wasm');
    expect(mm.container.resolve(TOKENS.Backend)).toBe(mm.backend);
  });

  test('register() rejects undecorated classes and names already taken', async () => {
    const mm = await createMultimeditron({ backend: false, plugins: [] });
    class Plain {}
    expect(() => mm.register(Plain)).toThrow(expect.objectContaining({
      code: 'E_REGISTRATION', message: 'Plain is decorated with neither @RegisterModality nor @RegisterLoader',
    }));
    mm.register(AlphaModality);
    mm.register(AlphaModality); // the same registration again is harmless
    class OtherAlpha extends DenseModality {}
    RegisterModality('alpha', { config: AlphaConfig, processor: DenseProcessor })(OtherAlpha);
    const err = (() => {
      try {
        mm.register(OtherAlpha);
      } catch (e) {
        return e as DuplicateRegistrationError;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(DuplicateRegistrationError);
    expect(err!.registrationName).toBe('alpha');
    expect(err!.kind).toBe('modality');
  });
});

describe('AutoModality and AutoModalityLoader', () => {
  let mm: Awaited<ReturnType<typeof createMultimeditron>>;
  beforeAll(async () => {
    mm = await createMultimeditron({ backend: false, plugins: [] });
    mm.register(AlphaModality, BetaModality, RawSignalLoader, RawWaveformLoader, ScaledSignalLoader);
  });

  test('are the instance\'s own builders', () => {
    expect(mm.modalities).toBeInstanceOf(AutoModality);
    expect(mm.loaders).toBeInstanceOf(AutoModalityLoader);
    expect(mm.modalities.names()).toEqual(['alpha', 'beta']);
    expect(mm.loaders.names()).toEqual(['raw-signal', 'raw-waveform', 'scaled-signal']);
  });

  test('createConfig builds the registered config class and checks modelType against modalityType', () => {
    const c = mm.modalities.createConfig({ modelType: 'alpha', hiddenSize: 8 });
    expect(c).toBeInstanceOf(AlphaConfig);
    expect(c.modalityType).toBe('signal');
    expect(mm.modalities.createConfig({ hiddenSize: 8 }, 'beta')).toBeInstanceOf(BetaConfig);
    const wrongType = (() => {
      try {
        mm.modalities.createConfig({ modelType: 'alpha', modalityType: 'image' });
      } catch (e) {
        return e as ConfigValidationError;
      }
      return undefined;
    })();
    expect(wrongType).toBeInstanceOf(ConfigValidationError);
    expect(wrongType!.path).toBe('/modalityType');
    expect(() => mm.modalities.createConfig({ hiddenSize: 8 })).toThrow(expect.objectContaining({ path: '/modelType', rule: 'required' }));
    expect(() => mm.modalities.createConfig({ modelType: 'nope' })).toThrow(/Unknown modality "nope". Registered: alpha, beta/);
    // a config instance of the right class passes through
    expect(mm.modalities.createConfig(c)).toBe(c);
  });

  test('fromConfig builds, loads and runs the modality; processorFor builds only the processor', async () => {
    const before = tf.memory().numTensors;
    const m = await mm.modalities.fromConfig({ modelType: 'beta', hiddenSize: 5, tokens: 3, inputDim: 2 });
    expect(m).toBeInstanceOf(BetaModality);
    expect(m.processor).toBeInstanceOf(DenseProcessor);
    const [p] = m.processor.processAll({ type: 'waveform', value: [1, 2, 3, 4, 5, 6] });
    const out = m.forward([p!.value]);
    expect(out.shape).toEqual([1, 3, 5]);
    out.dispose();
    m.dispose();
    expect(tf.memory().numTensors).toBe(before);
    const proc = await mm.modalities.processorFor({ modelType: 'alpha' });
    expect(proc).toBeInstanceOf(DenseProcessor);
    expect(proc.inputName).toBe('dense_values');
    expect(tf.memory().numTensors).toBe(before);
  });

  test('loaders are created by name with validated options, and checked against a modality type', async () => {
    const l = mm.loaders.create('scaled-signal', { scale: 2 });
    expect(l).toBeInstanceOf(ScaledSignalLoader);
    expect(Array.from((await l.load({ type: 'signal', value: [1, 2] })) as Float32Array)).toEqual([2, 4]);
    expect((mm.loaders.create('scaled-signal') as ScaledSignalLoader).options.scale).toBe(1);
    expect(() => mm.loaders.create('scaled-signal', { scale: 0 })).toThrow(ConfigValidationError);
    expect(mm.loaders.forModalityType('signal')).toEqual(['raw-signal', 'scaled-signal']);
    expect(() => mm.loaders.check('raw-signal', 'signal')).not.toThrow();
    expect(() => mm.loaders.check('raw-signal', 'waveform')).toThrow(MultimeditronError);
    expect(() => mm.loaders.check('raw-signal', 'waveform')).toThrow(/handles "signal", not "waveform"/);
  });
});
