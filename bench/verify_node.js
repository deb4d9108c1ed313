// aws-jwt-verify verifySync, warm key cache: µs per verification for each token given.
// stdin: {"issuer", "audience", "jwks", "tokens": {"RS256": "...", ...}, "seconds": 1.0}
// stdout: {"RS256": µs, ...}. Run with cwd devtools/node or NODE_PATH=devtools/node/node_modules.
"use strict";
const { JwtVerifier } = require("aws-jwt-verify");

let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const spec = JSON.parse(input);
  const verifier = JwtVerifier.create({ issuer: spec.issuer, audience: spec.audience,
                                        jwksUri: spec.issuer + "/jwks.json" });
  verifier.cacheJwks(spec.jwks);
  const out = {};
  for (const [alg, token] of Object.entries(spec.tokens)) {
    verifier.verifySync(token); // throws if the token is not valid: the figure would be meaningless
    for (let i = 0; i < 500; i++) verifier.verifySync(token);
    const best = [];
    for (let round = 0; round < 5; round++) {
      let n = 0;
      const start = process.hrtime.bigint();
      const stop = start + BigInt(Math.round(spec.seconds * 1e9 / 5));
      let now = start;
      while (now < stop) {
        for (let i = 0; i < 100; i++) verifier.verifySync(token);
        n += 100;
        now = process.hrtime.bigint();
      }
      best.push(Number(now - start) / 1e3 / n);
    }
    out[alg] = Math.min(...best); // the fastest round, as bench_verify.py takes its own
  }
  process.stdout.write(JSON.stringify(out));
});
