/** `url` with its password (in the userinfo or a password= parameter) replaced by *** */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    if (u.searchParams.has("password")) u.searchParams.set("password", "***");
    return u.toString();
  } catch {
    // not a URL: hide whatever sits between the first ':' after '//' and the '@'
    return url
      .replace(/(\/\/[^:/?#@]*):[^@/?#]*@/, "$1:***@")
      .replace(/([?&]password=)[^&#]*/i, "$1***");
  }
}
