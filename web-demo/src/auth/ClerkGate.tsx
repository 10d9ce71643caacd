/** Sign-in through Clerk (loaded only when the server runs with CITADEL_AUTH=clerk): every
 * request then carries a fresh session token from Clerk's `getToken`. */
import { ClerkProvider, SignIn, SignedIn, SignedOut, UserButton, useAuth } from "@clerk/clerk-react";
import { useEffect, useState, type ReactNode } from "react";
import { freshToken, keepFresh, setTokenSource } from "./token";

export default function ClerkGate({
  publishableKey,
  children,
}: {
  publishableKey: string;
  children: ReactNode;
}) {
  return (
    <ClerkProvider publishableKey={publishableKey}>
      <SignedOut>
        <div className="sign-in">
          <SignIn routing="hash" />
        </div>
      </SignedOut>
      <SignedIn>
        <SessionTokens>
          <div className="user-button">
            <UserButton />
          </div>
          {children}
        </SessionTokens>
      </SignedIn>
    </ClerkProvider>
  );
}

function SessionTokens({ children }: { children: ReactNode }) {
  const { getToken } = useAuth();
  const [ready, setReady] = useState(false);
  useEffect(() => {
    setTokenSource(() => getToken());
    void freshToken().finally(() => setReady(true));
    const stop = keepFresh();
    return () => {
      stop();
      setTokenSource(null);
    };
  }, [getToken]);
  return ready ? <>{children}</> : null;
}
