import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import fsStore from "../../plugins/store/fs.ts";
import { silentLogger } from "../../runtime/log.ts";
import { testStore } from "../conformance/store.ts";

const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-fs-"));
testStore("fs", async () => fsStore.create({ dir }, { baseDir: "/", log: silentLogger, env: {} }), () => fsp.rm(dir, { recursive: true, force: true }));
