// The pack's translated strings, without the frontend: t(), the loaded messages, and where the
// language comes from. i18n.js wires it to the ComfyUI frontend (its Comfy.Locale setting and its api
// object); the standalone review page (review.js) wires it to the browser's language. Panel modules
// import t from here, so they can be used on a page that has no ComfyUI frontend.
//
// ComfyUI merges every pack's locales/<lang>/main.json and serves them at GET /i18n; this pack's
// strings are the "dataseteGates" section of each. t("panel.cancel", "Cancel") answers in the current
// language, else with the English given at the call, so a string without a translation (or a server
// without /i18n) still shows. "{name}" in a string is replaced by params.name.

const SECTION = "dataseteGates";
const ENGLISH = "en";

const messages = {}; // locale -> this pack's section of its main.json

// Where the current language comes from; replaced by setLocaleSource().
let localeSource = () => navigator.language?.split("-")[0] || ENGLISH;

/** Fill the messages from ComfyUI's GET /i18n answer, fetched by `fetchI18n()` (a fetch Response). */
export async function loadMessages(fetchI18n) {
    try {
        const response = await fetchI18n();
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

/** The languages there are strings for ("en", "zh", ...), once loaded. */
export function loadedLocales() {
    return Object.keys(messages);
}

/** `source()` answers the current language ("en", "zh", "zh-TW", ...). */
export function setLocaleSource(source) {
    localeSource = source;
}

export function currentLocale() {
    let value;
    try {
        value = localeSource();
    } catch {
        value = undefined;
    }
    return String(value || ENGLISH);
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
