/** The filesystem readers the image creator knows, in the order auto-detection tries them. */
import { extReader } from './ext.js'
import { fatReader } from './fat.js'
import { ntfsReader } from './ntfs.js'
import { swapReader } from './swap.js'
import type { FsReader } from './types.js'

export const readers: FsReader[] = [extReader, fatReader, ntfsReader, swapReader]
