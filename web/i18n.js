// The pack's own browser strings in the frontend's language.
//
// The strings and t() live in i18n_core.js (no frontend needed, so the review page can use them);
// this module points them at the frontend: the language is the setting Comfy.Locale, and the strings
// come from GET /i18n through the frontend's api object.
//
// Only the frontend's public extension API is used: app.extensionManager.setting.get, or
// app.ui.settings.getSettingValue on a frontend without it.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { currentLocale, loadMessages, setLocaleSource, t } from "./i18n_core.js";

export { currentLocale, t };

// Panels are built synchronously, so this module waits for the strings before the panel modules
// run; a server that does not answer in this time gets English panels instead of a stalled page.
const LOAD_TIMEOUT_MS = 5000;

setLocaleSource(() => {
    let value;
    try {
        value = app.extensionManager?.setting?.get?.("Comfy.Locale");
    } catch {
        value = undefined; // not ready yet, or not this API: try the older one
    }
    if (!value) {
        try {
            value = app.ui?.settings?.getSettingValue?.("Comfy.Locale");
        } catch {
            value = undefined;
        }
    }
    // The frontend's own default when the setting is unset.
    return value || navigator.language?.split("-")[0];
});

/** Settles once the translations are in (or could not be had). */
export const ready = loadMessages(() => api.fetchApi("/i18n"));
await Promise.race([ready, new Promise((resolve) => setTimeout(resolve, LOAD_TIMEOUT_MS))]);
