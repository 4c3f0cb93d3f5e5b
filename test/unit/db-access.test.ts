import * as fsp from "node:fs/promises";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { blockedFolder, localUser } from "../../runtime/db-access.ts";

const root = await fsp.mkdtemp(path.join(os.tmpdir(), "apfa-access-"));
afterAll(() => fsp.rm(root, { recursive: true, force: true }));

describe("who can enter the embedded Postgres folders", () => {
  const nobody = { uid: 65534, gid: 65534 };

  it("names the first private folder on the way, and none once others may enter", async () => {
    const inner = path.join(root, "private", "project", ".apfa", "pg");
    await fsp.mkdir(path.dirname(inner), { recursive: true });
    await fsp.chmod(root, 0o755);
    await fsp.chmod(path.join(root, "private"), 0o700);
    expect(blockedFolder(inner, nobody)).toBe(path.join(root, "private"));
    await fsp.chmod(path.join(root, "private"), 0o711);
    expect(blockedFolder(inner, nobody)).toBeUndefined();
  });

  it("uses the owner's and the group's bits for that user and group", async () => {
    const dir = path.join(root, "owned");
    await fsp.mkdir(dir, { mode: 0o700 });
    const st = await fsp.stat(dir);
    expect(blockedFolder(dir, { uid: st.uid, gid: 65534 })).toBeUndefined();
    await fsp.chmod(dir, 0o070);
    expect(blockedFolder(dir, { uid: 65534, gid: st.gid })).toBeUndefined();
    expect(blockedFolder(dir, nobody)).toBe(dir);
  });

  it("reads users from a passwd file", async () => {
    const file = path.join(root, "passwd");
    await fsp.writeFile(file, "root:x:0:0:root:/root:/bin/sh\npostgres:x:101:104::/var/lib/postgresql:/bin/sh\n");
    expect(localUser("postgres", file)).toEqual({ uid: 101, gid: 104 });
    expect(localUser("nobody-here", file)).toBeUndefined();
  });
});
