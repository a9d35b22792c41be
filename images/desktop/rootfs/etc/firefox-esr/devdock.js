// devdock: Firefox on a shared server looks up no Mozilla service at start (Remote Settings, Normandy studies,
// push) and works offline. Firefox's enterprise policies (policies.json) may not set these preferences, so they are
// defaults here (Debian reads this folder as the browser's default preferences); the services point at an address
// that is never looked up and answers nothing (the discard port); Firefox takes another Remote Settings server
// only with MOZ_REMOTE_SETTINGS_DEVTOOLS=1, which the image sets.
pref("services.settings.server", "http://127.0.0.1:9/v1");
pref("app.normandy.enabled", false);
pref("app.normandy.api_url", "http://127.0.0.1:9/");
pref("app.shield.optoutstudies.enabled", false);
pref("messaging-system.rsexperimentloader.enabled", false);
pref("dom.push.serverURL", "http://127.0.0.1:9/");
pref("toolkit.telemetry.enabled", false);
pref("toolkit.telemetry.server", "http://127.0.0.1:9/");
// The new tab page fetches wallpapers and stories: a blank new tab instead.
pref("browser.newtabpage.enabled", false);
pref("browser.newtabpage.activity-stream.newtabWallpapers.enabled", false);
pref("browser.newtabpage.activity-stream.newtabWallpapers.v2.enabled", false);
pref("browser.newtabpage.activity-stream.feeds.topsites", false);
