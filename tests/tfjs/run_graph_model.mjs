// Loads a TF.js graph model as an app would and runs it on images.
//
// Usage: node run_graph_model.mjs URL IMAGES.f32 N H W OUT.json BACKEND [fromTFHub]
//
// URL is the model's handle URL (with fromTFHub=1, TF.js asks for
// URL/model.json?tfjs-format=file and each shard with the same query) or
// its model.json. IMAGES.f32 holds N float32 images [H, W, 3], little-endian.
// BACKEND is "cpu" or "wasm" (@tensorflow/tfjs-backend-wasm, whose binary
// ships in the npm package: no network). OUT.json gets the output's shape and
// values, the backend, the model's inputs and outputs and the TF.js version.
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { readFileSync, writeFileSync } from 'fs';

const [url, imagesPath, n, h, w, outPath, backend, fromTFHub = '1'] = process.argv.slice(2);
if (!(await tf.setBackend(backend))) throw new Error(`backend ${backend} did not start`);
await tf.ready();
const model = await tf.loadGraphModel(url, { fromTFHub: fromTFHub === '1' });
const buf = readFileSync(imagesPath);
const data = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
const images = tf.tensor4d(data, [Number(n), Number(h), Number(w), 3]);
const out = model.execute(images);
writeFileSync(outPath, JSON.stringify({
  shape: out.shape, values: Array.from(out.dataSync()), backend: tf.getBackend(),
  version: tf.version.tfjs,
  inputs: model.inputs.map((i) => [i.name, i.shape, i.dtype]),
  outputs: model.outputs.map((o) => [o.name, o.shape, o.dtype]),
}));
