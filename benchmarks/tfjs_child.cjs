// Child process of figure 7: throughput of a TF.js graph model in Node.js.
//
// Usage: NODE_PATH=tests/tfjs/node_modules node benchmarks/tfjs_child.cjs BACKEND MODEL_DIR SIZE REPS OUT.json
//
// BACKEND is cpu (plain JavaScript) or wasm (@tensorflow/tfjs-backend-wasm).
// Loads MODEL_DIR/model.json and its shards from disk (tf.io.fromMemory), then
// times model.execute on float32 batches [1, S, S, 3] and [16, S, S, 3] (2
// untimed calls, then REPS timed ones each); OUT.json gets the times (s).
const tf = require('@tensorflow/tfjs');
require('@tensorflow/tfjs-backend-wasm');
const fs = require('fs');
const path = require('path');

async function main() {
  const [backend, dir, size, reps, out] = process.argv.slice(2);
  if (!(await tf.setBackend(backend))) throw new Error(`backend ${backend} did not start`);
  await tf.ready();
  const model = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
  const group = model.weightsManifest[0];
  const data = Buffer.concat(group.paths.map((p) => fs.readFileSync(path.join(dir, p))));
  const graph = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: model.modelTopology, weightSpecs: group.weights,
    weightData: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength),
    signature: model.signature, format: model.format }));
  const times = {};
  for (const n of [1, 16]) {
    const x = tf.randomUniform([n, Number(size), Number(size), 3]);
    for (let i = 0; i < 2; i++) graph.execute(x).dataSync();
    times[n] = [];
    for (let i = 0; i < Number(reps); i++) {
      const t0 = process.hrtime.bigint();
      graph.execute(x).dataSync();
      times[n].push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
  }
  fs.writeFileSync(out, JSON.stringify({ times, version: tf.version.tfjs }));
}
main();
