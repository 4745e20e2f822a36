// order-automation: the typed TypeScript face of the PostgreSQL package.
export type { Db, DbClient, DbPool } from './db.js';
export { migrate, migrationsDir, type MigrateOptions, type MigrateResult } from './migrate.js';
export {
  cancelExpiredOrders,
  confirmShippedOrders,
  purgeCancelledOrders,
  purgeHistory,
  type RunOptions,
} from './automation.js';
export { setSchedule, pauseJob, resumeJob, type ScheduleChange } from './schedule.js';
export { nextFireTime, scheduleProblem } from './cron.js';
export { doctor, type DoctorReport, type DoctorCheck, type DoctorStatus, type DoctorOptions } from './doctor.js';
export type { Fix } from './preflight.js';
export { getStatus, type Status, type JobStatus, type LastRun, type PgCronState } from './status.js';
export {
  getSettings,
  updateSettings,
  settingNames,
  type Settings,
  getStoreSettings,
  setStoreSettings,
  clearStoreSettings,
  type StoreSettings,
} from './settings.js';
export { readOrderEvents, watchEvents, type OrderEvent, type ReadEventsOptions, type WatchOptions } from './events.js';
export {
  placeOrder,
  payOrder,
  shipOrder,
  confirmReceipt,
  cancelOrder,
  paymentStarted,
  extendReceipt,
  holdOrder,
  releaseOrder,
  getOrder,
  type PlaceOrder,
  type OrderLine,
  type OrderDetails,
} from './orders.js';
export {
  orderStates,
  stateName,
  jobNames,
  type Order,
  type OrderState,
  type StateCodes,
  type JobName,
} from './types.js';
export {
  OrderAutomationError,
  InvalidTransitionError,
  InsufficientStockError,
  InsufficientBalanceError,
  OrderNotModifiableError,
  OrderNotFoundError,
  InvalidArgumentError,
  InvalidSettingError,
  PgCronUnavailableError,
  DatabaseUnreachableError,
  NotInstalledError,
  PermissionDeniedError,
  PgCronJobMissingError,
  ReceiptAlreadyExtendedError,
  HoldConflictError,
  NoStoreOwnerError,
  AdoptionRequiredError,
  AdoptionMismatchError,
  OrderExistsError,
  toOrderAutomationError,
} from './errors.js';
