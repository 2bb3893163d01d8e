#!/usr/bin/env node
// onnx_run.js: runs a model `qatlab export` wrote in ONNX Runtime (the npm package onnxruntime-node, CPU)
// on 8-bit images and writes its output codes, so that they can be compared with qatlab's integer graph.
//
//   node onnx_run.js MODEL.onnx --out CODES.bin IMAGES [--batch B] [--threads T] [--latency K]
//   IMAGES: --pixels FILE.bin --shape N,C,H,W   raw uint8 images, (N, C, H, W)
//           --floats FILE.bin --shape N,C,H,W   float32 images (a float model's normalised 'input')
//           --idx FILE                          an MNIST IDX image file (28 x 28, one channel; .gz too)
//           --cifar FILE                        a CIFAR-10 binary batch (label byte + 3 x 32 x 32 each)
//
// CODES.bin receives the 'codes' output, int8, (N, K), image after image (a float model: 'logits',
// float32). One JSON line on stdout gives
// the images, K, the runtime's version and timing: total seconds over all images at batch B, and with
// --latency K the median seconds of K single-image runs. Exit codes: 0 done, 1 a failure, 3 ONNX Runtime
// not found (the caller may skip; apps/scripts/fetch_onnxruntime.sh installs it).
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const zlib = require('zlib');

function fail(msg, code = 1) {
  process.stderr.write('onnx_run.js: ' + msg + '\n');
  process.exit(code);
}

function loadRuntime() {
  const dirs = [];
  if (process.env.QATLAB_ONNXRUNTIME_DIR) dirs.push(process.env.QATLAB_ONNXRUNTIME_DIR);
  dirs.push(path.join(os.homedir(), '.cache', 'qatlab', 'onnxruntime'));
  for (const d of dirs) {
    const p = path.join(d, 'node_modules', 'onnxruntime-node');
    if (fs.existsSync(p)) return require(p);
  }
  fail('onnxruntime-node not found in ' + dirs.join(' or ') + ': run apps/scripts/fetch_onnxruntime.sh', 3);
}

function parseArgs(argv) {
  const a = {batch: 256, threads: 1, latency: 0};
  for (let i = 0; i < argv.length; ++i) {
    const k = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) fail(k + ' needs a value');
      return argv[++i];
    };
    if (k === '--out') a.out = v();
    else if (k === '--pixels') a.pixels = v();
    else if (k === '--floats') a.floats = v();
    else if (k === '--shape') a.shape = v().split(',').map(Number);
    else if (k === '--idx') a.idx = v();
    else if (k === '--cifar') a.cifar = v();
    else if (k === '--batch') a.batch = Number(v());
    else if (k === '--threads') a.threads = Number(v());
    else if (k === '--latency') a.latency = Number(v());
    else if (k.startsWith('--')) fail('unknown option ' + k);
    else if (!a.model) a.model = k;
    else fail('unexpected argument ' + k);
  }
  if (!a.model || !a.out) fail('usage: node onnx_run.js MODEL.onnx --out CODES.bin (--pixels F --shape N,C,H,W | --idx F | --cifar F)');
  for (const k of ['batch', 'threads', 'latency'])
    if (!Number.isInteger(a[k]) || a[k] < (k === 'latency' ? 0 : 1)) fail('--' + k + ' must be a positive integer');
  return a;
}

// -> {data: Uint8Array (N, C, H, W), shape: [N, C, H, W]}
function readImages(a) {
  if (a.pixels) {
    if (!a.shape || a.shape.length !== 4 || a.shape.some(x => !Number.isInteger(x) || x < 1)) fail('--pixels needs --shape N,C,H,W');
    const data = new Uint8Array(fs.readFileSync(a.pixels));
    if (data.length !== a.shape.reduce((x, y) => x * y, 1)) fail(a.pixels + ': ' + data.length + ' bytes, not ' + a.shape.join(' x '));
    return {data, shape: a.shape};
  }
  if (a.floats) {
    if (!a.shape || a.shape.length !== 4 || a.shape.some(x => !Number.isInteger(x) || x < 1)) fail('--floats needs --shape N,C,H,W');
    const b = fs.readFileSync(a.floats);
    const data = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
    if (data.length !== a.shape.reduce((x, y) => x * y, 1)) fail(a.floats + ': ' + data.length + ' floats, not ' + a.shape.join(' x '));
    return {data, shape: a.shape, floats: true};
  }
  if (a.idx) {
    let b = fs.readFileSync(a.idx);
    if (b[0] === 0x1f && b[1] === 0x8b) b = zlib.gunzipSync(b);
    if (b.readUInt32BE(0) !== 0x803) fail(a.idx + ': not an IDX image file');
    const n = b.readUInt32BE(4), h = b.readUInt32BE(8), w = b.readUInt32BE(12);
    if (b.length !== 16 + n * h * w) fail(a.idx + ': truncated');
    return {data: new Uint8Array(b.buffer, b.byteOffset + 16, n * h * w), shape: [n, 1, h, w]};
  }
  if (a.cifar) {
    const b = fs.readFileSync(a.cifar);
    const rec = 1 + 3 * 32 * 32;
    if (b.length % rec !== 0) fail(a.cifar + ': not a CIFAR-10 binary batch');
    const n = b.length / rec;
    const data = new Uint8Array(n * 3 * 32 * 32);
    for (let i = 0; i < n; ++i) data.set(b.subarray(i * rec + 1, (i + 1) * rec), i * 3 * 32 * 32);
    return {data, shape: [n, 3, 32, 32]};
  }
  fail('name the images: --pixels, --idx or --cifar');
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const ort = loadRuntime();
  const images = readImages(a);
  const [n, c, h, w] = images.shape;
  const per = c * h * w;
  const session = await ort.InferenceSession.create(a.model, {
    executionProviders: ['cpu'], intraOpNumThreads: a.threads, interOpNumThreads: 1,
  });
  const inputName = images.floats ? 'input' : 'pixels';
  if (session.inputNames[0] !== inputName)
    fail(a.model + ": its input is '" + session.inputNames[0] + "', these images are for '" + inputName + "'");
  const outputName = session.outputNames.includes('codes') ? 'codes' : session.outputNames[0];
  const run = async (start, count) => {
    const x = new ort.Tensor(images.floats ? 'float32' : 'uint8', images.data.subarray(start * per, (start + count) * per),
                             [count, c, h, w]);
    return (await session.run({[inputName]: x}, [outputName]))[outputName];
  };
  let codes = null, k = 0;
  const t0 = process.hrtime.bigint();
  for (let s = 0; s < n; s += a.batch) {
    const count = Math.min(a.batch, n - s);
    const y = await run(s, count);
    if (!codes) {
      k = y.data.length / count;  // values per image: K for a classifier
      codes = new y.data.constructor(n * k);
    }
    codes.set(y.data, s * k);
  }
  const total = Number(process.hrtime.bigint() - t0) / 1e9;
  const times = [];
  for (let i = 0; i < a.latency; ++i) {
    const t = process.hrtime.bigint();
    await run(i % n, 1);
    times.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  times.sort((x, y) => x - y);
  fs.writeFileSync(a.out, Buffer.from(codes.buffer, codes.byteOffset, codes.byteLength));
  process.stdout.write(JSON.stringify({
    images: n, outputs: k, onnxruntime: ort.env.versions.common, threads: a.threads, batch: a.batch,
    seconds: total, images_per_second: n / total, latency_seconds: times.length ? times[times.length >> 1] : null,
  }) + '\n');
}

main().catch(e => fail(String(e && e.message ? e.message : e)));
