// The pack's own browser strings in the frontend's language.
//
// ComfyUI merges every pack's locales/<lang>/main.json and serves them at GET /i18n; the frontend
// takes its node names and tooltips from there. This pack's panel strings are the "dataseteGates"
// section of the same files. t("panel.cancel", "Cancel") answers in the language of the setting
// Comfy.Locale, else with the English given at the call, so a string without a translation (or a
// server without /i18n) still shows. "{name}" in a string is replaced by params.name.
//
// Only the frontend's public extension API is used: app.extensionManager.setting.get, or
// app.ui.settings.getSettingValue on a frontend without it.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const SECTION = "dataseteGates";
const ENGLISH = "en";
// Panels are built synchronously, so this module waits for the strings before the panel modules
// run; a server that does not answer in this time gets English panels instead of a stalled page.
const LOAD_TIMEOUT_MS = 5000;

const messages = {}; // locale -> this pack's section of its main.json

async function load() {
    try {
        const response = await api.fetchApi("/i18n");
        if (!response.ok) return;
        const all = await response.json();
        for (const [locale, data] of Object.entries(all ?? {})) {
            const section = data?.[SECTION];
            if (section && typeof section === "object") messages[locale] = section;
        }
    } catch (error) {
        console.warn("Datasete Gates: could not load the translations; the panels stay in English", error);
    }
}

/** Settles once the translations are in (or could not be had). */
export const ready = load();
await Promise.race([ready, new Promise((resolve) => setTimeout(resolve, LOAD_TIMEOUT_MS))]);

/** The frontend's language: the Comfy.Locale setting ("en", "zh", "zh-TW", ...). */
export function currentLocale() {
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
    return String(value || navigator.language?.split("-")[0] || ENGLISH);
}

function lookup(section, key) {
    let node = section;
    for (const part of key.split(".")) {
        if (!node || typeof node !== "object") return undefined;
        node = node[part];
    }
    return typeof node === "string" && node ? node : undefined;
}

function interpolate(text, params) {
    return text.replace(/\{(\w+)\}/g, (whole, name) => (
        Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole));
}

/**
 * The string `key` ("panel.cancel") of the pack's locale files in the current language; `english`
 * when that language has none. Like the frontend, a language without the key falls back to English.
 */
export function t(key, english, params = undefined) {
    const text = lookup(messages[currentLocale()], key) ?? english;
    return params ? interpolate(text, params) : text;
}
