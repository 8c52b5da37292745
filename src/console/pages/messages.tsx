// The sign-in form, and the page that says one thing (not found, refused, an error).
import type { VNode } from "preact";

export function LoginPage({
  next,
  error,
  signedIn,
}: {
  next: string;
  error: string | null;
  signedIn: boolean;
}): VNode {
  return (
    <article>
      <h1>Sign in to the simmeter console</h1>
      {signedIn && (
        <p>
          You are signed in. <a href={next}>Continue →</a>
        </p>
      )}
      {error && (
        <p class="flash flash-error" role="alert" data-testid="login-error">
          {error}
        </p>
      )}
      <form method="post" action="/console/login">
        <input type="hidden" name="next" value={next} />
        <label>
          ADMIN_TOKEN
          <input type="password" name="token" autocomplete="current-password" required autofocus />
        </label>
        <button type="submit" data-testid="login">
          Sign in
        </button>
      </form>
      <p class="small muted">
        Paste the admin listener's ADMIN_TOKEN. The browser keeps a session cookie (HttpOnly,
        SameSite=Strict, Secure over HTTPS) for 12 hours; the token itself is never stored.
      </p>
    </article>
  );
}

export function MessagePage({
  title,
  message,
  back,
}: {
  title: string;
  message: string;
  back?: string;
}): VNode {
  return (
    <>
      <h1>{title}</h1>
      <p data-testid="message">{message}</p>
      {back && (
        <p>
          <a href={back}>← Back</a>
        </p>
      )}
    </>
  );
}
