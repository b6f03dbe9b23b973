#!/usr/bin/env node
// Compiles a solc standard-JSON input read from stdin with solc-js and writes the standard-JSON
// output to stdout. Imports must already be inlined in `sources` (node/chain/compile.py does
// that), so no import callback and no file-system access happen here.
// `--version` prints the solc-js version ("0.8.37+commit.…").
'use strict';

const solc = require('solc');

if (process.argv.includes('--version')) {
  process.stdout.write(solc.version() + '\n');
  process.exit(0);
}

const chunks = [];
process.stdin.on('data', (chunk) => chunks.push(chunk));
process.stdin.on('end', () => {
  const input = Buffer.concat(chunks).toString('utf8');
  process.stdout.write(solc.compile(input));
});
