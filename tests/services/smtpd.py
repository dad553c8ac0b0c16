"""An SMTP server for the live tests: aiosmtpd on 127.0.0.1, a port the kernel chooses
(written to <dir>/port once listening), STARTTLS with a self-signed certificate from
<dir>, AUTH PLAIN/LOGIN accepting only user/secret, and recipients named nobody@...
refused with 550. Messages are accepted and dropped."""

import asyncio

import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 queued"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login == b"user" and auth_data.password == b"secret"
    )
    return AuthResult(success=ok, handled=False)


async def main(directory):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(f"{directory}/cert.pem", f"{directory}/key.pem")

    def factory():
        return SMTP(
            Handler(),
            hostname="mx.test",
            tls_context=ctx,
            require_starttls=False,
            authenticator=authenticator,
            auth_require_tls=False,
        )

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with open(f"{directory}/port.tmp", "w") as f:
        f.write(str(port))
    import os

    os.rename(f"{directory}/port.tmp", f"{directory}/port")
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
