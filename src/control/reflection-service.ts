/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha), so that grpcurl
 * and similar tools can list and call the daemon's services without the
 * .proto files. Descriptors come from the same .proto files the daemon loads.
 */
import { readFileSync } from 'node:fs'
import { Status } from 'nice-grpc-common'
import type protobuf from 'protobufjs'
import { fileDescriptorBytes, servicesOf, symbolsOf } from './descriptors.js'
import { type BidiStream, parseProto, PROTO_DIR, serviceDefinition } from './proto-loader.js'

interface ReflectionRequest {
  host: string
  messageRequest?: 'fileByFilename' | 'fileContainingSymbol' | 'fileContainingExtension' | 'allExtensionNumbersOfType' | 'listServices'
  fileByFilename?: string
  fileContainingSymbol?: string
  fileContainingExtension?: { containingType: string; extensionNumber: number }
  allExtensionNumbersOfType?: string
  listServices?: string
}

interface ReflectionResponse {
  validHost: string
  originalRequest: ReflectionRequest
  fileDescriptorResponse?: { fileDescriptorProto: Uint8Array[] }
  allExtensionNumbersResponse?: { baseTypeName: string; extensionNumber: number[] }
  listServicesResponse?: { service: { name: string }[] }
  errorResponse?: { errorCode: number; errorMessage: string }
}

export type ReflectionDefinition = {
  ServerReflectionInfo: BidiStream<ReflectionRequest, ReflectionResponse>
}

const REFLECTION_FILE = 'grpc-reflection.proto'
const V1_PACKAGE = 'package grpc.reflection.v1;'

/** The reflection proto as served under `pkg`, loaded with the given field-name style. */
function reflectionRoot(pkg: 'v1' | 'v1alpha', keepCase: boolean): protobuf.Root {
  const source = readFileSync(`${PROTO_DIR}${REFLECTION_FILE}`, 'utf8')
  if (!source.includes(V1_PACKAGE)) throw new Error(`${REFLECTION_FILE} must declare "${V1_PACKAGE}"`)
  return parseProto(source.replace(V1_PACKAGE, `package grpc.reflection.${pkg};`), { keepCase })
}

export const ReflectionV1Service = serviceDefinition<ReflectionDefinition>(reflectionRoot('v1', false), 'grpc.reflection.v1.ServerReflection', [
  'ServerReflectionInfo',
])
export const ReflectionV1AlphaService = serviceDefinition<ReflectionDefinition>(
  reflectionRoot('v1alpha', false),
  'grpc.reflection.v1alpha.ServerReflection',
  ['ServerReflectionInfo'],
)

interface ServedFile {
  name: string
  bytes: Uint8Array
  symbols: Set<string>
  services: string[]
}

/** Descriptors of the served .proto files: `files` maps a file name to its parsed (keepCase) root. */
function servedFiles(files: Record<string, protobuf.Root>): ServedFile[] {
  return Object.entries(files).map(([name, root]) => {
    return { name, bytes: fileDescriptorBytes(root, name), symbols: new Set(symbolsOf(root)), services: servicesOf(root) }
  })
}

/**
 * The reflection service implementation over the given .proto files (name →
 * keepCase root), parsed and turned into descriptors at the first request:
 * most daemons are never asked, and the work was ~0.04 s of every start.
 */
export function reflectionImplementation(files: () => Record<string, protobuf.Root>) {
  let servedOnce: ServedFile[] | undefined
  const served = (): ServedFile[] =>
    (servedOnce ??= servedFiles({
      ...files(),
      'grpc/reflection/v1/reflection.proto': reflectionRoot('v1', true),
      'grpc/reflection/v1alpha/reflection.proto': reflectionRoot('v1alpha', true),
    }))
  const notFound = (what: string): Partial<ReflectionResponse> => ({ errorResponse: { errorCode: Status.NOT_FOUND, errorMessage: `${what} not found` } })
  const fileResponse = (f: ServedFile): Partial<ReflectionResponse> => ({ fileDescriptorResponse: { fileDescriptorProto: [f.bytes] } })

  function answer(req: ReflectionRequest): Partial<ReflectionResponse> {
    switch (req.messageRequest) {
      case 'listServices':
        return { listServicesResponse: { service: served().flatMap((f) => f.services).map((name) => ({ name })) } }
      case 'fileByFilename': {
        const f = served().find((s) => s.name === req.fileByFilename)
        return f ? fileResponse(f) : notFound(`file ${req.fileByFilename}`)
      }
      case 'fileContainingSymbol': {
        const symbol = req.fileContainingSymbol!.replace(/^\./, '')
        const f = served().find((s) => s.symbols.has(symbol))
        return f ? fileResponse(f) : notFound(`symbol ${symbol}`)
      }
      case 'allExtensionNumbersOfType': {
        const type = req.allExtensionNumbersOfType!.replace(/^\./, '')
        return served().some((s) => s.symbols.has(type)) ? { allExtensionNumbersResponse: { baseTypeName: type, extensionNumber: [] } } : notFound(`type ${type}`)
      }
      case 'fileContainingExtension':
        return notFound(`extension ${req.fileContainingExtension?.extensionNumber} of ${req.fileContainingExtension?.containingType}`)
      default:
        return { errorResponse: { errorCode: Status.INVALID_ARGUMENT, errorMessage: 'empty reflection request' } }
    }
  }

  return {
    async *ServerReflectionInfo(requests: AsyncIterable<ReflectionRequest>): AsyncGenerator<Partial<ReflectionResponse>> {
      for await (const req of requests) {
        const { messageRequest: _which, ...original } = req
        yield { validHost: req.host, originalRequest: original, ...answer(req) }
      }
    },
  }
}
