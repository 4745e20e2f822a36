// Provider "url": the server DATABASE_URL names, used as it is (nothing to start or stop).
import { type Database, DatabaseUnavailableError, messageOf, readCronDatabase } from './common.js';

export async function urlDatabase(url: string): Promise<Database> {
  const cronDatabase = await readCronDatabase(url, { createExtension: false }).catch((error: unknown) => {
    throw new DatabaseUnavailableError(`the server at DATABASE_URL is not usable: ${messageOf(error)}`, {
      cause: error,
    });
  });
  return { provider: 'url', url, cronDatabase, stop: async () => {} };
}
