// The admin key: asked for once per browser tab, kept in sessionStorage
// (gone when the tab closes), sent only in the Authorization header of Admin
// API calls. Never written to a URL, the history, a cookie or the console.

const STORAGE_KEY = "twisted-gw.adminKey";
let memoryKey = ""; // when storage is disabled, the key lives as long as the page

export function adminKey() {
  try {
    return sessionStorage.getItem(STORAGE_KEY) || memoryKey;
  } catch {
    return memoryKey;
  }
}

export function setAdminKey(key) {
  memoryKey = key;
  try {
    sessionStorage.setItem(STORAGE_KEY, key);
  } catch {
    /* storage disabled: memoryKey it is */
  }
}

export function forgetAdminKey() {
  memoryKey = "";
  try {
    sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    /* storage disabled */
  }
}
