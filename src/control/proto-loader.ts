/**
 * Loads the control .proto files at run time with protobufjs and turns a
 * service into a nice-grpc service definition (path, streaming flags and
 * (de)serializers per method). Messages are plain JS objects with camelCase
 * field names; 64-bit integers become JS numbers, enums their names.
 */
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { MethodDefinition } from 'nice-grpc'
import protobuf from 'protobufjs'

/** The proto/ folder of the package, found from src/ (vitest) and from dist/src/ (built). */
export const PROTO_DIR: string = (() => {
  for (const rel of ['../../proto/', '../../../proto/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url))
    if (existsSync(`${dir}ezio.proto`)) return dir
  }
  throw new Error(`cannot find the proto/ folder (ezio.proto) above ${fileURLToPath(import.meta.url)}`)
})()

/** The .proto files the daemon serves, relative to PROTO_DIR. */
export const PROTO_FILES = ['ezio.proto', 'blockswarm.proto'] as const

const TO_OBJECT: protobuf.IConversionOptions = { longs: Number, enums: String, defaults: true, arrays: true, objects: true, oneofs: true }

/** A unary method whose messages have the types Req and Res (fields may be omitted when sending). */
export type Unary<Req, Res> = MethodDefinition<Partial<Req>, Req, Partial<Res>, Res, false, false>
/** A method answering with a stream of Res. */
export type ServerStream<Req, Res> = MethodDefinition<Partial<Req>, Req, Partial<Res>, Res, false, true>
/** A method taking and answering streams. */
export type BidiStream<Req, Res> = MethodDefinition<Partial<Req>, Req, Partial<Res>, Res, true, true>

/** Parse .proto source (camelCase field names) into a resolved root. */
export function parseProto(source: string, opts: { keepCase?: boolean } = {}): protobuf.Root {
  const root = protobuf.parse(source, new protobuf.Root(), { keepCase: opts.keepCase ?? false }).root
  root.resolveAll()
  return root
}

/** Read and parse one file from PROTO_DIR. */
export function loadProto(file: string, opts: { keepCase?: boolean } = {}): protobuf.Root {
  return parseProto(readFileSync(`${PROTO_DIR}${file}`, 'utf8'), opts)
}

function codec<T>(type: protobuf.Type): { encode(value: Partial<T>): Uint8Array; decode(bytes: Uint8Array): T } {
  return {
    encode(value) {
      return type.encode(type.fromObject(value as Record<string, unknown>)).finish()
    },
    decode(bytes) {
      return type.toObject(type.decode(bytes), TO_OBJECT) as T
    },
  }
}

/**
 * A nice-grpc service definition for service `fullName` (e.g. "ezio.EZIO") of
 * `root`. D is the caller's typed view of it; the method names are checked
 * against the .proto here, the message shapes by the tests.
 */
export function serviceDefinition<D extends Record<string, MethodDefinition<any, any, any, any>>>(
  root: protobuf.Root,
  fullName: string,
  methods: readonly (keyof D & string)[],
): D {
  const service = root.lookupService(fullName)
  const have = Object.keys(service.methods).sort()
  const want = [...methods].sort()
  if (have.join() !== want.join()) throw new Error(`service ${fullName}: the .proto has methods ${have.join(', ')}, the code expects ${want.join(', ')}`)
  const def: Record<string, MethodDefinition<unknown, unknown, unknown, unknown>> = {}
  for (const method of service.methodsArray) {
    method.resolve()
    const req = codec(method.resolvedRequestType!)
    const res = codec(method.resolvedResponseType!)
    def[method.name] = {
      path: `/${fullName}/${method.name}`,
      requestStream: Boolean(method.requestStream),
      responseStream: Boolean(method.responseStream),
      requestSerialize: req.encode,
      requestDeserialize: req.decode,
      responseSerialize: res.encode,
      responseDeserialize: res.decode,
      options: {},
    }
  }
  return def as D
}
