/**
 * google.protobuf.FileDescriptorProto bytes for a loaded .proto, as server
 * reflection hands them out. protobufjs writes the descriptor; two things are
 * put right here so that protoc-based tools (grpcurl, Python, Go) accept it:
 * type names become fully qualified, and map entry types get their canonical
 * `<Field>Entry` names.
 */
import protobuf from 'protobufjs'
import descriptor from 'protobufjs/ext/descriptor.js'

type MessageDescriptor = descriptor.IDescriptorProto & { field: FieldDescriptor[]; nestedType: MessageDescriptor[] }
type FieldDescriptor = descriptor.IFieldDescriptorProto

/** protoc's map entry name: field name in CamelCase + "Entry". */
function mapEntryName(field: string): string {
  return field.replace(/(?:^|_)([a-z0-9])/g, (_m, c: string) => c.toUpperCase()) + 'Entry'
}

function qualify(d: MessageDescriptor, type: protobuf.Type): void {
  for (const f of d.field) {
    const field = type.fields[f.name!]
    if (!field) throw new Error(`descriptor of ${type.fullName}: no field ${f.name} (load the root with keepCase)`)
    field.resolve()
    if (field instanceof protobuf.MapField) {
      const entry = d.nestedType.find((n) => n.name === f.typeName)
      if (!entry) throw new Error(`descriptor of ${type.fullName}: no map entry type for ${f.name}`)
      entry.name = mapEntryName(f.name!)
      f.typeName = `${type.fullName}.${entry.name}`
      const value = entry.field?.find((v) => v.number === 2)
      if (value && field.resolvedType) value.typeName = field.resolvedType.fullName
    } else if (field.resolvedType) {
      f.typeName = field.resolvedType.fullName
    }
  }
  for (const nested of d.nestedType) {
    const t = type.nested?.[nested.name!]
    if (t instanceof protobuf.Type) qualify(nested, t)
  }
}

/** The FileDescriptorProto of a root loaded from one .proto file (keepCase), named `fileName`. */
export function fileDescriptorBytes(root: protobuf.Root, fileName: string): Uint8Array {
  const set = root.toDescriptor('proto3')
  if (set.file.length !== 1) throw new Error(`${fileName}: expected one package, protobufjs made ${set.file.length} files`)
  const file = set.file[0]
  file.name = fileName
  for (const m of file.messageType as MessageDescriptor[]) qualify(m, root.lookupType(`${file.package}.${m.name}`))
  return descriptor.FileDescriptorProto.encode(file).finish()
}

/** Every fully-qualified name a file defines (services, their methods, messages, nested types, map entries, enums). */
export function symbolsOf(root: protobuf.Root): string[] {
  const out: string[] = []
  const walk = (ns: protobuf.NamespaceBase): void => {
    for (const obj of ns.nestedArray) {
      const name = obj.fullName.slice(1)
      if (obj instanceof protobuf.Service) {
        out.push(name, ...obj.methodsArray.map((m) => `${name}.${m.name}`))
      } else if (obj instanceof protobuf.Type) {
        out.push(name)
        for (const f of obj.fieldsArray) if (f instanceof protobuf.MapField) out.push(`${name}.${mapEntryName(f.name)}`)
        walk(obj)
      } else if (obj instanceof protobuf.Enum) {
        out.push(name)
      } else if (obj instanceof protobuf.Namespace) {
        walk(obj)
      }
    }
  }
  walk(root)
  return out
}

/** Fully-qualified names of the services a root defines. */
export function servicesOf(root: protobuf.Root): string[] {
  const out: string[] = []
  const walk = (ns: protobuf.NamespaceBase): void => {
    for (const obj of ns.nestedArray) {
      if (obj instanceof protobuf.Service) out.push(obj.fullName.slice(1))
      else if (obj instanceof protobuf.Namespace && !(obj instanceof protobuf.Type)) walk(obj)
    }
  }
  walk(root)
  return out
}
