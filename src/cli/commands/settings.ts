// The commands about settings: the global settings row (its names, kinds and help come from the
// settings descriptor) and the per-store overrides.
import {
  clearStoreSettings,
  getSettings,
  getStoreSettings,
  InvalidSettingError,
  setStoreSettings,
  updateSettings,
} from '../../index.js';
import { settingsDescriptor, type SettingName } from '../../settings.js';
import { isOff, noMore, settingChanges, splitPair, UsageError } from '../args.js';
import { columns, listed, oneLine, sentence, settingsText, storesText } from '../output.js';
import type { Command } from './index.js';

const settingKeys = Object.keys(settingsDescriptor) as SettingName[];
const nullableColumns = settingKeys
  .filter((k) => settingsDescriptor[k].nullable)
  .map((k) => settingsDescriptor[k].column);

export const settingsCommand: Command = {
  usage: 'settings [get] | settings set <name>=<value> ...',
  summary: 'show the settings, or change some of them (all or none)',
  details: `Intervals are written as PostgreSQL reads them: 10 minutes, 1 day, 00:00:30; ${listed(nullableColumns)}
also take off (NULL). When one value is refused, no setting changes.
Example: order-automation settings set payment_timeout='15 minutes' batch_size=500
${columns(
  settingKeys.map((key) => {
    const { column, kind, nullable, doc } = settingsDescriptor[key];
    return [`  ${column}`, nullable ? `${kind} or off` : kind, doc];
  }),
)}`,
  options: [],
  async run({ url, args }) {
    const [action = 'get', ...pairs] = args;
    if (action === 'get') {
      noMore(pairs);
      const settings = await getSettings(url);
      return { data: settings, text: settingsText(settings) };
    }
    if (action !== 'set') throw new UsageError(`settings takes get or set, not "${action}"`);
    if (pairs.length === 0) throw new UsageError('settings set needs at least one <name>=<value>');
    const changes = settingChanges(pairs);
    try {
      const settings = await updateSettings(url, changes);
      return { data: settings, text: settingsText(settings) };
    } catch (error) {
      if (error instanceof InvalidSettingError) {
        throw new InvalidSettingError(`${sentence(error.message)} No setting was changed.`, {
          sqlstate: error.sqlstate,
          hint: error.hint,
          cause: error,
        });
      }
      throw error;
    }
  },
};

export const storeSettingsCommand: Command = {
  usage: 'store-settings [get] | store-settings set <store> <name>=<value> ... | store-settings clear <store>',
  summary: 'per-store payment_timeout / receipt_timeout overrides: show, set, or clear',
  details: `Deadlines of a store's new orders and new shipments follow its overrides; a value of off (NULL)
or a cleared store follows the global setting. Example: order-automation store-settings set store1 payment_timeout='30 minutes'`,
  options: [],
  async run({ url, args }) {
    const [action = 'get', storeId, ...pairs] = args;
    if (action === 'get') {
      noMore(args.slice(1));
      const stores = await getStoreSettings(url);
      return { data: stores, text: storesText(stores) };
    }
    if (action !== 'set' && action !== 'clear')
      throw new UsageError(`store-settings takes get, set or clear, not "${action}"`);
    if (storeId === undefined) throw new UsageError(`store-settings ${action} needs a store id`);
    if (action === 'clear') {
      noMore(pairs);
      await clearStoreSettings(url, storeId);
      return { data: { storeId, cleared: true }, text: `store ${oneLine(storeId)} follows the global settings` };
    }
    if (pairs.length === 0) throw new UsageError('store-settings set needs at least one <name>=<value>');
    const changes: { paymentTimeout?: string | null; receiptTimeout?: string | null } = {};
    for (const [name, value] of pairs.map(splitPair)) {
      const key =
        name === 'payment_timeout' ? 'paymentTimeout' : name === 'receipt_timeout' ? 'receiptTimeout' : undefined;
      if (!key)
        throw new UsageError(
          `unknown store setting "${name}"; the store settings are payment_timeout, receipt_timeout`,
        );
      if (key in changes) throw new UsageError(`${name} is given twice`);
      changes[key] = isOff(value) ? null : value;
    }
    const stored = await setStoreSettings(url, storeId, changes);
    return { data: stored, text: storesText([stored]) };
  },
};
