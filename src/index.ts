// order-automation: the typed TypeScript face of the PostgreSQL package.
export type { Db } from './db.js';
export { migrate, migrationsDir, type MigrateOptions, type MigrateResult } from './migrate.js';
export { cancelExpiredOrders, confirmShippedOrders, type RunOptions } from './automation.js';
export { getStatus, type Status, type JobStatus, type LastRun } from './status.js';
export { getSettings, updateSettings, settingNames, type Settings } from './settings.js';
export { readOrderEvents, type OrderEvent, type ReadEventsOptions } from './events.js';
export { placeOrder, payOrder, shipOrder, confirmReceipt, cancelOrder, type PlaceOrder, type OrderLine } from './orders.js';
export { orderStates, type Order, type OrderState, type JobName } from './types.js';
export {
  OrderAutomationError, InvalidTransitionError, InsufficientStockError, InsufficientBalanceError,
  OrderNotModifiableError, OrderNotFoundError, InvalidArgumentError, InvalidSettingError,
  PgCronUnavailableError, DatabaseUnreachableError,
} from './errors.js';
