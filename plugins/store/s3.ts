/**
 * `s3` store: objects in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, …) through the `minio` client.
 * A single PUT and a completed multipart upload are both atomic on S3, so readers never see half an object.
 * Puts read at most `part_size` bytes at a time: a smaller object goes up in one PUT, a larger one as a
 * multipart upload driven here (not by minio, whose uploader first lists incomplete uploads, which s3rver and
 * some gateways lack). Every request body is a Buffer, so each request can be retried on its own.
 * @module
 */
import * as http from "node:http";
import * as https from "node:https";
import { Client } from "minio";
import { z } from "zod";
import { definePlugin, type Store, type StoreStat } from "../../runtime/contracts.ts";
import { ApfaError, type ErrorCode } from "../../runtime/errors.ts";
import { assertKey, assertPrefix } from "../../runtime/keys.ts";
import { withRetry } from "../../runtime/retry.ts";

export const NAME = "s3";

export interface S3Options {
  /** Service URL, e.g. `http://127.0.0.1:9000` or `https://s3.eu-west-1.amazonaws.com`. No credentials, no path. */
  endpoint: string;
  /** Signing region (`auto` for R2). @default "us-east-1" */
  region: string;
  /** Bucket name. */
  bucket: string;
  /** Key prefix inside the bucket (`team-a/apfa`), so several pipelines can share one bucket. */
  prefix?: string;
  /** Name of the env var holding the access key id. @default "AWS_ACCESS_KEY_ID" */
  access_key_env: string;
  /** Name of the env var holding the secret access key. @default "AWS_SECRET_ACCESS_KEY" */
  secret_key_env: string;
  /** Path-style URLs (`host/bucket/key`); only AWS endpoints can use virtual-hosted style. @default true */
  path_style: boolean;
  /** Create the bucket on first use when it does not exist. @default true */
  create_bucket: boolean;
  /** Bytes per PUT / multipart part (5 MiB – 5 GiB); objects up to this size go up in one request. @default 67108864 */
  part_size: number;
  /** Retries of one request on network errors and 5xx answers, with exponential backoff. @default 3 */
  retries: number;
}

const MiB = 1024 * 1024;
/** First backoff delay; later ones double (250 ms, 500 ms, 1 s, …), capped at BACKOFF_MAX_MS. */
const BACKOFF_BASE_MS = 250;
const BACKOFF_MAX_MS = 10_000;

const options = z.strictObject({
  endpoint: z
    .url({ protocol: /^https?$/, error: "`endpoint` must be an http(s) URL such as http://127.0.0.1:9000" })
    .refine((u) => !new URL(u).username && !new URL(u).password, {
      message: "`endpoint` must not contain credentials; put them in the env vars named by access_key_env/secret_key_env",
    })
    .refine((u) => new URL(u).pathname === "/" && !new URL(u).search, { message: "`endpoint` must have no path or query" })
    .describe("S3 service URL, e.g. http://127.0.0.1:9000 (MinIO) or https://s3.eu-west-1.amazonaws.com"),
  region: z.string().min(1).default("us-east-1").describe("Signing region (`auto` for Cloudflare R2)"),
  bucket: z
    .string()
    .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, "`bucket` must be 3-63 lowercase letters, digits, dots or hyphens")
    .describe("Bucket name"),
  prefix: z
    .string()
    .transform((p) => p.replace(/\/+$/, ""))
    .refine((p) => p === "" || isKey(p), {
      message: "`prefix` must be a relative key like team-a/apfa (segments of A-Z a-z 0-9 . _ = + -, no `..`)",
    })
    .optional()
    .describe("Key prefix inside the bucket, e.g. team-a/apfa"),
  access_key_env: z.string().min(1).default("AWS_ACCESS_KEY_ID").describe("Name of the env var holding the access key id"),
  secret_key_env: z.string().min(1).default("AWS_SECRET_ACCESS_KEY").describe("Name of the env var holding the secret key"),
  path_style: z.boolean().default(true).describe("Use path-style URLs (host/bucket/key); needed by MinIO and most gateways"),
  create_bucket: z.boolean().default(true).describe("Create the bucket on first use if it is missing"),
  part_size: z.int().min(5 * MiB).max(5 * 1024 * MiB).default(64 * MiB).describe("Bytes per PUT or multipart part"),
  retries: z.int().min(0).max(10).default(3).describe("Retries per request on network errors and 5xx, with backoff"),
});

function isKey(p: string): boolean {
  try {
    assertKey(p);
    return true;
  } catch {
    return false;
  }
}

const NETWORK = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ECONNABORTED"]);
const S3_TRANSIENT = new Set(["InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"]);

/** The S3 or errno code of an error, looking through the ApfaError this file wraps errors in. */
function codeOf(err: unknown): string {
  const e = (err instanceof ApfaError ? err.cause : err) as { code?: unknown } | undefined;
  return typeof e?.code === "string" ? e.code : "";
}

function transient(err: unknown): boolean {
  const code = codeOf(err);
  if (NETWORK.has(code) || S3_TRANSIENT.has(code)) return true;
  // With its own retries disabled, minio reports a 5xx/429 without an XML body as this plain Error.
  return err instanceof Error && /Retryable HTTP status: (5\d\d|429|408)/.test(err.message);
}

/** Reads a byte stream in parts of exactly `size` bytes (the last may be shorter), peeking one chunk ahead
 * so the caller knows whether a part is the last without holding two parts in memory. */
function partReader(src: AsyncIterable<Uint8Array>, size: number) {
  const it = src[Symbol.asyncIterator]();
  let carry: Uint8Array | undefined;
  let ended = false;
  const nextChunk = async (): Promise<Uint8Array | undefined> => {
    if (carry) {
      const c = carry;
      carry = undefined;
      return c;
    }
    while (!ended) {
      const r = await it.next();
      if (r.done) ended = true;
      else if (r.value.byteLength > 0) return r.value;
    }
    return undefined;
  };
  return async (): Promise<{ part: Buffer; last: boolean }> => {
    const chunks: Uint8Array[] = [];
    let n = 0;
    while (n < size) {
      const c = await nextChunk();
      if (!c) break;
      const take = Math.min(size - n, c.byteLength);
      chunks.push(c.subarray(0, take));
      n += take;
      if (take < c.byteLength) carry = c.subarray(take);
    }
    if (!carry && !ended) carry = await nextChunk();
    return { part: Buffer.concat(chunks, n), last: carry === undefined };
  };
}

export default definePlugin({
  kind: "store",
  name: NAME,
  description: "Objects in an S3-compatible bucket (AWS S3, MinIO, R2) with retries and multipart puts",
  options,
  create(opts: S3Options, ctx): Store {
    const accessKey = ctx.env[opts.access_key_env];
    const secretKey = ctx.env[opts.secret_key_env];
    for (const [opt, name, value] of [["access_key_env", opts.access_key_env, accessKey], ["secret_key_env", opts.secret_key_env, secretKey]]) {
      if (!value) {
        throw new ApfaError("config", `environment variable ${name} is not set; export it, or name another variable with option \`${opt}\``, {
          where: "store:s3",
        });
      }
    }
    const url = new URL(opts.endpoint);
    const useSSL = url.protocol === "https:";
    const agent = useSSL ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
    const client = new Client({
      endPoint: url.hostname.replace(/^\[(.*)\]$/, "$1"),
      port: url.port ? Number(url.port) : useSSL ? 443 : 80,
      useSSL,
      accessKey,
      secretKey,
      region: opts.region,
      pathStyle: opts.path_style,
      partSize: opts.part_size,
      transportAgent: agent,
      // Retries happen here instead: minio's only cover 5xx (not refused or reset connections) and print to the console.
      retryOptions: { disableRetry: true },
    });
    const bucket = opts.bucket;
    const prefix = opts.prefix ? `${opts.prefix}/` : "";
    const where = `${url.origin}/${bucket}/${prefix}`;
    const log = ctx.log.child({ store: "s3", bucket });

    /** Removes credentials from anything that reaches a message: some S3 errors echo the access key id. */
    const scrub = (s: string) => [accessKey!, secretKey!].reduce((m, k) => (k.length >= 4 ? m.split(k).join("***") : m), s);

    function s3Error(op: string, key: string, err: unknown, attempts: number): ApfaError {
      if (err instanceof ApfaError) return err;
      const code = codeOf(err);
      const detail = scrub(err instanceof Error ? err.message : String(err));
      const cause = Object.assign(new Error(detail), { code });
      const at = key ? `${op} ${key}` : op;
      let kind: ErrorCode = "store";
      let msg: string;
      if (code === "NoSuchKey" || code === "NotFound") {
        kind = "not_found";
        msg = `no object at ${key}`;
      } else if (code === "NoSuchBucket") {
        kind = "config";
        msg = `${at} failed: bucket ${bucket} does not exist at ${url.origin}; create it or set option \`create_bucket: true\``;
      } else if (["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"].includes(code)) {
        kind = "access_denied";
        msg = `${at} failed: ${code} — check the credentials in $${opts.access_key_env} / $${opts.secret_key_env} and the bucket policy`;
      } else if (NETWORK.has(code)) {
        msg = `${at} failed: cannot reach ${url.origin} (${code}) after ${attempts} attempt(s); check option \`endpoint\``;
      } else {
        msg = `${at} failed after ${attempts} attempt(s): ${code ? `${code}: ` : ""}${detail}`;
      }
      return new ApfaError(kind, msg, { cause, where: "store:s3" });
    }

    async function retry<T>(op: string, key: string, fn: () => Promise<T>): Promise<T> {
      let tries = 0;
      try {
        return await withRetry(() => (tries++, fn()), {
          attempts: opts.retries + 1,
          baseMs: BACKOFF_BASE_MS,
          maxMs: BACKOFF_MAX_MS,
          retryable: transient,
          onRetry: (err, attempt, delayMs) =>
            log.warn("s3 request failed, retrying", { op, key, attempt, delay_ms: delayMs, error: scrub(String((err as Error)?.message ?? err)) }),
        });
      } catch (err) {
        throw s3Error(op, key, err, tries);
      }
    }

    let bucketReady: Promise<void> | undefined;
    function ready(): Promise<void> {
      if (!opts.create_bucket) return Promise.resolve();
      bucketReady ??= (async () => {
        try {
          if (await retry("check bucket", "", () => client.bucketExists(bucket))) return;
        } catch (err) {
          // Keys scoped to objects may not HEAD the bucket; assume it exists and let the real request tell.
          if (codeOf(err) === "AccessDenied") return;
          throw err;
        }
        await retry("create bucket", "", () => client.makeBucket(bucket, opts.region)).catch((err: unknown) => {
          // Another worker may have created it in between.
          if (codeOf(err) !== "BucketAlreadyOwnedByYou" && codeOf(err) !== "BucketAlreadyExists") throw err;
        });
        log.info("created bucket", { bucket });
      })();
      bucketReady.catch(() => (bucketReady = undefined));
      return bucketReady;
    }

    const name = (key: string) => prefix + assertKey(key);

    async function multipart(key: string, first: Buffer, read: () => Promise<{ part: Buffer; last: boolean }>): Promise<void> {
      const obj = name(key);
      const uploadId = await retry("start multipart put", key, () => client.initiateNewMultipartUpload(bucket, obj, {}));
      try {
        const etags: { part: number; etag: string }[] = [];
        let cur = { part: first, last: false };
        for (let n = 1; ; n++) {
          const body = cur.part;
          const { etag } = await retry(`put part ${n} of`, key, () =>
            client.uploadPart({ bucketName: bucket, objectName: obj, uploadID: uploadId, partNumber: n, headers: {} }, body));
          etags.push({ part: n, etag });
          if (cur.last) break;
          cur = await read();
        }
        await retry("complete multipart put", key, () => client.completeMultipartUpload(bucket, obj, uploadId, etags));
      } catch (err) {
        await client.abortMultipartUpload(bucket, obj, uploadId).catch(() => {});
        throw err instanceof ApfaError ? err : s3Error("put", key, err, 1);
      }
    }

    return {
      describe: () => `s3:${where}`,
      // Each request (each multipart part) is retried here, under runtime/retry.ts's policy and `retries`.
      retriesItself: true,
      async put(key, data) {
        const obj = name(key);
        await ready();
        if (data instanceof Uint8Array && data.byteLength <= opts.part_size) {
          const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
          return void (await retry("put", key, () => client.putObject(bucket, obj, body, body.byteLength)));
        }
        const read = partReader(data instanceof Uint8Array ? (async function* () { yield data; })() : data, opts.part_size);
        let first: { part: Buffer; last: boolean };
        try {
          first = await read();
        } catch (err) {
          throw new ApfaError("store", `put ${key} failed: reading the data to upload: ${(err as Error).message}`, { cause: err, where: "store:s3" });
        }
        if (first.last) await retry("put", key, () => client.putObject(bucket, obj, first.part, first.part.byteLength));
        else await multipart(key, first.part, read);
      },
      async get(key) {
        const stream = await this.getStream(key);
        const chunks: Buffer[] = [];
        try {
          for await (const c of stream) chunks.push(c as Buffer);
        } catch (err) {
          throw s3Error("get", key, err, 1);
        }
        return new Uint8Array(Buffer.concat(chunks));
      },
      async getStream(key) {
        const obj = name(key);
        await ready();
        return (await retry("get", key, () => client.getObject(bucket, obj))) as AsyncIterable<Uint8Array>;
      },
      async stat(key) {
        const obj = name(key);
        await ready();
        try {
          const st = await retry("stat", key, () => client.statObject(bucket, obj));
          return { key, size: st.size, mtime: new Date(st.lastModified) };
        } catch (err) {
          if (err instanceof ApfaError && err.code === "not_found") return null;
          throw err;
        }
      },
      async *list(p) {
        assertPrefix(p);
        await ready();
        let token = "";
        do {
          const page = await retry("list", p, () => client.listObjectsV2Query(bucket, prefix + p, token, "", 1000, ""));
          for (const o of page.objects) {
            if (!o.name) continue;
            // minio decodes `+` as a space (it asks for url-encoded keys, which some servers ignore); valid keys
            // never contain spaces, so mapping back is lossless. (Its XML parser also turns an all-digit key
            // with no `/`, like `007`, into a number; the apfa layout has no such keys.)
            const key = String(o.name).replace(/ /g, "+").slice(prefix.length);
            yield { key, size: Number(o.size), mtime: new Date(o.lastModified) } satisfies StoreStat;
          }
          token = page.isTruncated ? String(page.nextContinuationToken ?? "") : "";
        } while (token);
      },
      async delete(key) {
        const obj = name(key);
        await ready();
        try {
          await retry("delete", key, () => client.removeObject(bucket, obj));
        } catch (err) {
          if (!(err instanceof ApfaError && err.code === "not_found")) throw err;
        }
      },
      async close() {
        agent.destroy();
      },
    };
  },
});
