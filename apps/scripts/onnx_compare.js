#!/usr/bin/env node
// onnx_compare.js: qatlab's output codes (`qatlab eval MODEL.int8.h5 --dump FILE.csv`) against ONNX
// Runtime's (onnx_run.js --out CODES.bin) for the same images, as one JSON line: images, logits, the
// share of logits with equal codes and within one step, the largest difference, top-1 agreement (each
// side's prediction by the lowest-index rule of quant/README.md section 7) and both accuracies.
//   node onnx_compare.js DUMP.csv CODES.bin
'use strict';
const fs = require('fs');

function fail(msg) {
  process.stderr.write('onnx_compare.js: ' + msg + '\n');
  process.exit(1);
}

const [dumpPath, codesPath] = process.argv.slice(2);
if (!dumpPath || !codesPath) fail('usage: node onnx_compare.js DUMP.csv CODES.bin');
const lines = fs.readFileSync(dumpPath, 'utf8').split('\n').filter(l => l && !l.startsWith('#'));
if (!lines.length || !lines[0].startsWith('image,label,predicted,code_0')) fail(dumpPath + ': not a qatlab output dump');
const k = lines[0].split(',').length - 3;
const rows = lines.slice(1);
// A small file's Buffer is a view into Node's shared pool: take its own bytes, not the whole pool.
const codesBuf = fs.readFileSync(codesPath);
const ort = new Int8Array(codesBuf.buffer, codesBuf.byteOffset, codesBuf.length);
if (ort.length !== rows.length * k) fail(codesPath + ': ' + ort.length + ' codes for ' + rows.length + ' images of ' + k);

const argmax = (v) => v.reduce((best, x, i) => (x > v[best] ? i : best), 0);
let equal = 0, within1 = 0, maxDiff = 0, top1 = 0, correctQ = 0, correctO = 0;
rows.forEach((line, i) => {
  const f = line.split(',').map(Number);
  const q = f.slice(3);
  const o = Array.from(ort.subarray(i * k, (i + 1) * k));
  for (let j = 0; j < k; ++j) {
    const d = Math.abs(q[j] - o[j]);
    equal += d === 0;
    within1 += d <= 1;
    maxDiff = Math.max(maxDiff, d);
  }
  const pq = argmax(q), po = argmax(o);
  top1 += pq === po;
  correctQ += pq === f[1];
  correctO += po === f[1];
});
const n = rows.length, logits = n * k;
process.stdout.write(JSON.stringify({
  images: n, logits, logits_equal: equal / logits, logits_within_one_step: within1 / logits, max_code_difference: maxDiff,
  top1_agreement: top1 / n, accuracy_qatlab: correctQ / n, accuracy_onnxruntime: correctO / n,
}) + '\n');
